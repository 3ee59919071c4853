package protoplex

import (
	"context"
	"github.com/darkit/protoplex/internal/testnet"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/darkit/protoplex/protocols"
)

// TestSmallBufferStillSeesWholeClientHello: with buffer_size below a TLS
// record, identification still gets room for one whole record, so an SNI
// route sees a 1,815-byte Chromium ClientHello.
func TestSmallBufferStillSeesWholeClientHello(t *testing.T) {
	hello, err := os.ReadFile("protocols/testdata/flights/tls-chromium.bin")
	if err != nil {
		t.Fatal(err)
	}
	named := func(name string) string {
		return testnet.Serve(t, func(c net.Conn) {
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadFull(c, make([]byte, len(hello))); err == nil {
				io.WriteString(c, name)
			}
		})
	}
	pm := NewProtocolManager(WithLogger(discardLogger()), WithBufferSize(1600), WithIdentifyMinBytes(1024))
	a := protocols.NewTLSProtocol(named("A"))
	a.SNI = []string{"a.example"}
	for _, p := range []*protocols.Protocol{a, protocols.NewTLSProtocol(named("B"))} {
		if err := pm.AddProtocol(p); err != nil {
			t.Fatal(err)
		}
	}
	if got := roundTrip(t, serveTest(t, pm), string(hello)); got != "A" {
		t.Fatalf("got %q, want the a.example route", got)
	}
}

// stalledBackend accepts connections and never reads them, with a small
// receive buffer so that an upload to it stalls quickly.
func stalledBackend(t *testing.T) string {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			setRcvBuf(fd, 16<<10)
		})
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return testnet.ServeOn(t, ln, func(net.Conn) { <-t.Context().Done() })
}

// TestClientResetDuringStalledUploadIsReleased: the backend stops reading
// while the client uploads, then the client resets. The connection leaves
// connections_active (with idle_timeout 0, nothing else would end it).
func TestClientResetDuringStalledUploadIsReleased(t *testing.T) {
	pm := NewProtocolManager(WithLogger(discardLogger()), WithGracefulShutdownTimeout(time.Second))
	if err := pm.AddProtocol(&protocols.Protocol{Name: "UP", Target: stalledBackend(t), MatchStartBytes: [][]byte{[]byte("UP")}}); err != nil {
		t.Fatal(err)
	}
	addr := serveTest(t, pm)
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	chunk := append([]byte("UP"), make([]byte, 64<<10)...)
	// Upload until the path is full: a write that cannot finish in 500 ms
	// means protoplex is blocked writing to the backend.
	for i := 0; ; i++ {
		if i == 2000 {
			t.Fatal("the upload never stalled")
		}
		_ = c.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
		if _, err := c.Write(chunk); err != nil {
			break
		}
		chunk = chunk[:64<<10]
	}
	if pm.GetMetrics().ActiveConnections != 1 {
		t.Fatalf("active %d, want 1", pm.GetMetrics().ActiveConnections)
	}
	_ = c.(*net.TCPConn).SetLinger(0)
	c.Close() // RST
	waitFor(t, func() bool { return pm.GetMetrics().ActiveConnections == 0 })
	if got := scrape(t, pm)["protoplex_connections_closed_total{protocol=UP,reason=error,route=UP}"]; got != 1 {
		t.Fatalf("closed{reason=error} = %v, want 1", got)
	}
}
