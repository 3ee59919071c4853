package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/protocols"
)

// splitConn sends its first Write in two segments with a pause between
// them, as a client behind a 1,460-byte MSS and a slow link does.
type splitConn struct {
	net.Conn
	at    int
	pause time.Duration
	once  sync.Once
}

func (c *splitConn) Write(p []byte) (int, error) {
	split := false
	c.once.Do(func() { split = len(p) > c.at })
	if !split {
		return c.Conn.Write(p)
	}
	n, err := c.Conn.Write(p[:c.at])
	if err != nil {
		return n, err
	}
	time.Sleep(c.pause) // the stimulus under test: a gap between two segments
	m, err := c.Conn.Write(p[c.at:])
	return n + m, err
}

// flightBackend accepts connections and answers each with its name and
// whether the first len(want) bytes it received were exactly want.
func flightBackend(t *testing.T, name string, want func() []byte) string {
	return testnet.Serve(t, func(c net.Conn) {
		w := want()
		got := make([]byte, len(w))
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err := io.ReadFull(c, got)
		verdict := " exact"
		if err != nil || !bytes.Equal(got, w) {
			verdict = " corrupted"
		}
		io.WriteString(c, name+verdict)
	})
}

// TestSplitFirstFlightRoutes: route conditions hold however the first flight
// is split on the wire. A real Chromium ClientHello (1,815 bytes, with the
// X25519MLKEM768 key share) and an HTTP request with 1,100 bytes of headers
// before Host are sent in two segments with pauses up to 500 ms (longer than
// the 300 ms settle wait, which must not cut a structural NeedMore short),
// through a real protoplex socket to backends that check every byte, with
// sslh's catch-all (anyprot) registered first taking only unknown bytes.
func TestSplitFirstFlightRoutes(t *testing.T) {
	hello, err := os.ReadFile("../protocols/testdata/flights/tls-chromium.bin")
	if err != nil {
		t.Fatal(err)
	}
	request := []byte("GET / HTTP/1.1\r\nUser-Agent: split\r\nCookie: " + strings.Repeat("c", 1100) + "\r\nHost: host.example\r\n\r\n")
	var mu sync.Mutex
	var current []byte
	want := func() []byte { mu.Lock(); defer mu.Unlock(); return current }

	tlsA := protocols.NewTLSProtocol(flightBackend(t, "tls-A", want))
	tlsA.SNI = []string{"a.example"}
	httpA := protocols.NewHTTPProtocol(flightBackend(t, "http-A", want))
	httpA.Hosts = []string{"host.example"}
	// sslh's catch-all, registered first: it must take only what no
	// route matches, never the first segment of a split flight.
	anyprot := protocols.NewAnyProtProtocol(flightBackend(t, "anyprot", want))
	anyprot.Fallback = true
	addr, _ := startMux(t, anyprot, tlsA, protocols.NewTLSProtocol(flightBackend(t, "tls-B", want)),
		httpA, protocols.NewHTTPProtocol(flightBackend(t, "http-B", want)), protocols.NewPostgreSQLProtocol(flightBackend(t, "postgres", want)))
	startup, err := os.ReadFile("../protocols/testdata/flights/postgresql-psql-nossl.bin") // starts with 0x00, as anyprot's first bytes
	if err != nil {
		t.Fatal(err)
	}
	unknown := []byte("not a protocol anyone speaks\r\n")

	for _, c := range []struct {
		name   string
		flight []byte
		at     int
		pause  time.Duration
		want   string
	}{
		{"tls-whole", hello, len(hello), 0, "tls-A exact"},
		{"tls-1400-100ms", hello, 1400, 100 * time.Millisecond, "tls-A exact"},
		{"tls-900-500ms", hello, 900, 500 * time.Millisecond, "tls-A exact"},
		{"tls-5-500ms", hello, 5, 500 * time.Millisecond, "tls-A exact"},
		{"http-1100-500ms", request, 1100, 500 * time.Millisecond, "http-A exact"},
		{"http-40-100ms", request, 40, 100 * time.Millisecond, "http-A exact"},
		{"http-3-500ms", request, 3, 500 * time.Millisecond, "http-A exact"},
		{"postgres-4-500ms", startup, 4, 500 * time.Millisecond, "postgres exact"},
		{"unknown", unknown, len(unknown), 0, "anyprot exact"},
	} {
		t.Run(c.name, func(t *testing.T) {
			mu.Lock()
			current = c.flight
			mu.Unlock()
			conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
			sc := &splitConn{Conn: conn, at: c.at, pause: c.pause}
			if _, err := sc.Write(c.flight); err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(conn)
			if string(got) != c.want {
				t.Fatalf("got %q, want %q", got, c.want)
			}
		})
	}
}

// TestSplitClientHelloRealTLS: Go's TLS client (X25519MLKEM768 key share,
// a ~1.5 KB ClientHello) whose ClientHello is split with a pause completes a
// real handshake with the nginx that its SNI route names.
func TestSplitClientHelloRealTLS(t *testing.T) {
	tlsA := startNginx(t, "tls backend A", "a.example")
	tlsB := startNginx(t, "tls backend B", "b.example")
	routeA := protocols.NewTLSProtocol(tlsA)
	routeA.SNI = []string{"a.example"}
	addr, _ := startMux(t, routeA, protocols.NewTLSProtocol(tlsB))
	for _, at := range []int{1100, 600} {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		conn := tls.Client(&splitConn{Conn: raw, at: at, pause: 400 * time.Millisecond},
			&tls.Config{ServerName: "a.example", InsecureSkipVerify: true})
		if err := conn.HandshakeContext(ctx); err != nil {
			cancel()
			raw.Close()
			t.Fatalf("split at %d: handshake: %v", at, err)
		}
		io.WriteString(conn, "GET / HTTP/1.0\r\nHost: a.example\r\n\r\n")
		_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
		body, _ := io.ReadAll(conn)
		conn.Close()
		cancel()
		if !strings.HasSuffix(string(body), "tls backend A") {
			t.Fatalf("split at %d: got %q, want the a.example backend", at, body)
		}
	}
}
