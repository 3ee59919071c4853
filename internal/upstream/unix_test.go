//go:build unix

package upstream

import (
	"context"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/proxyproto"
)

// unixListen listens on a fresh socket path, closed with the test.
func unixListen(t *testing.T) (net.Listener, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "b.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, path
}

func TestParseUnixTargets(t *testing.T) {
	ts, err := ParseTargets([]string{"unix:/run/app.sock;w=3, 127.0.0.1:80"})
	if err != nil || len(ts) != 2 || ts[0] != (Target{"unix:/run/app.sock", 3}) {
		t.Fatalf("%v %+v", err, ts)
	}
	for _, bad := range []string{"unix:", "unix:run/app.sock", "unix:/" + strings.Repeat("a", MaxUnixPath), "unix:/a\x00b", "unix:/a;w=0"} {
		if _, err := ParseTargets([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := ParseTargets([]string{"unix:/" + strings.Repeat("a", MaxUnixPath-1)}); err != nil {
		t.Errorf("a path of %d bytes refused: %v", MaxUnixPath, err)
	}
	for _, opt := range []Options{{Source: []netip.Addr{netip.MustParseAddr("127.0.0.2")}}, {Transparent: true}} {
		if _, err := New([]Target{{Addr: "unix:/run/app.sock", Weight: 1}}, opt); err == nil {
			t.Errorf("unix target with %+v accepted", opt)
		}
	}
}

// TestDialUnixWithProxyHeader: a Unix-socket backend reads the TCP client
// and destination in the PROXY header, then the stream.
func TestDialUnixWithProxyHeader(t *testing.T) {
	ln, path := unixListen(t)
	client := &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 4000}
	local := &net.TCPAddr{IP: net.ParseIP("198.51.100.2"), Port: 443}
	want := proxyproto.Header{Source: netip.MustParseAddrPort("192.0.2.1:4000"), Dest: netip.MustParseAddrPort("198.51.100.2:443")}
	for _, v := range []string{"v1", "v2"} {
		s, err := New([]Target{{Addr: "unix:" + path, Weight: 1}}, Options{SendProxy: v})
		if err != nil {
			t.Fatal(err)
		}
		c, target, done, err := s.Dial(context.Background(), client, local)
		if err != nil {
			t.Fatal(err)
		}
		if target != "unix:"+path {
			t.Errorf("target %q", target)
		}
		c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
		c.Close()
		done()
		sc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 512)
		h, rest, err := proxyproto.Read(sc, buf, 10*time.Second)
		if err != nil || h != want {
			t.Fatalf("%s: %+v %v, want %+v", v, h, err, want)
		}
		if tail, _ := io.ReadAll(sc); string(buf[:rest])+string(tail) != "GET / HTTP/1.0\r\n\r\n" {
			t.Fatalf("%s: stream after the header %q", v, string(buf[:rest])+string(tail))
		}
		sc.Close()
	}
}

// TestHealthCheckUnix: HTTP health checks run over the socket; a removed
// socket fails them.
func TestHealthCheckUnix(t *testing.T) {
	ln, path := unixListen(t)
	done := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err.Error()
			return
		}
		defer c.Close()
		buf := make([]byte, 512)
		n, _ := c.Read(buf)
		io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
		done <- string(buf[:n])
	}()
	s, err := New([]Target{{Addr: "unix:" + path, Weight: 1}}, Options{Health: HealthCheck{Interval: time.Second, Check: "http", Path: "/ready"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.probe(context.Background(), s.targets[0], 5*time.Second); err != nil {
		t.Fatalf("probe: %v", err)
	}
	if req := <-done; !strings.HasPrefix(req, "GET /ready HTTP/1.1\r\nHost: localhost\r\n") {
		t.Fatalf("request %q", req)
	}
	ln.Close() // removes the socket file
	if err := s.probe(context.Background(), s.targets[0], 5*time.Second); err == nil {
		t.Fatal("probe of a closed socket succeeded")
	}
}
