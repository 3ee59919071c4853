package protoplex

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/upstream"
)

// proxyHeaderPair returns both ends of a real loopback connection.
func proxyHeaderPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// TestReadProxyHeaderRefusesWhatCannotFit: a header that announces (v2) or
// runs (v1) longer than allowed is refused as soon as that is known, not at
// the identification deadline nor after filling the buffer; the client
// keeps the connection open and silent meanwhile.
func TestReadProxyHeaderRefusesWhatCannotFit(t *testing.T) {
	ca, _ := net.ResolveTCPAddr("tcp", "192.0.2.1:4000")
	v2 := upstream.ProxyHeader("v2", ca, ca)
	for name, send := range map[string][]byte{
		"v2 length 65535":           append(append([]byte(nil), v2[:14]...), 0xFF, 0xFF),
		"v2 longer than the buffer": append(append([]byte(nil), v2[:14]...), 0x10, 0x00),
		"v1 over 107 bytes":         []byte("PROXY TCP4 192.0.2.1" + strings.Repeat(" ", 100)),
	} {
		t.Run(name, func(t *testing.T) {
			client, server := proxyHeaderPair(t)
			if _, err := client.Write(send); err != nil {
				t.Fatal(err)
			}
			done := make(chan bool, 1)
			go func() {
				_, _, ok := readProxyHeader(server, make([]byte, 4096), time.Minute)
				done <- ok
			}()
			select {
			case ok := <-done:
				if ok {
					t.Fatal("header accepted")
				}
			case <-time.After(10 * time.Second): // far below the one-minute deadline
				client.Close()
				<-done
				t.Fatal("still waiting for the rest of a header that cannot fit")
			}
		})
	}
}

// TestReadProxyHeaderKeepsWhatFollows: a valid header split from what
// follows is consumed, and the client's first bytes stay in the buffer.
func TestReadProxyHeaderKeepsWhatFollows(t *testing.T) {
	ca, _ := net.ResolveTCPAddr("tcp", "192.0.2.1:4000")
	for _, v := range []string{"v1", "v2"} {
		client, server := proxyHeaderPair(t)
		client.Write(append(upstream.ProxyHeader(v, ca, ca), "SSH-2.0-x\r\n"...))
		buf := make([]byte, 4096)
		addr, rest, ok := readProxyHeader(server, buf, 10*time.Second)
		if !ok || addr.String() != "192.0.2.1:4000" || string(buf[:rest]) != "SSH-2.0-x\r\n" {
			t.Fatalf("%s: %v %q %v", v, addr, buf[:rest], ok)
		}
	}
}
