package protoplex

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/protocols"
)

// TestDialErrorsCountedOncePerAttempt: 50 sequential clients to a single
// refused backend make exactly 50 attempts (one per connection: a target is
// dialed at most once per connection), counted 50 times in
// dial_errors_total{target} and 50 times as connections closed for
// dial_error.
func TestDialErrorsCountedOncePerAttempt(t *testing.T) {
	const deadAddr = "127.0.0.1:1" // refused
	pm := NewProtocolManager(WithLogger(discardLogger()))
	pm.AddProtocol(protocols.NewSSHProtocol(deadAddr))
	addr := serveTest(t, pm)
	for i := 0; i < 50; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "SSH-2.0-x\r\n")
		io.ReadAll(c) // closed by protoplex once the dial failed
		c.Close()
	}
	m := scrape(t, pm)
	if v := m["protoplex_dial_errors_total{protocol=SSH,route=SSH,target="+deadAddr+"}"]; v != 50 {
		t.Errorf("dial_errors_total = %v, want 50", v)
	}
	if v := m["protoplex_dial_duration_seconds{protocol=SSH,route=SSH}_count"]; v != 50 {
		t.Errorf("dial attempts observed = %v, want 50", v)
	}
	if v := m["protoplex_connections_closed_total{protocol=SSH,reason=dial_error,route=SSH}"]; v != 50 {
		t.Errorf("connections closed for dial_error = %v, want 50", v)
	}
}

// TestBackendDialedFromSource: with Protocol.Source the backend sees the
// connections arrive from those addresses, in turn.
func TestBackendDialedFromSource(t *testing.T) {
	backend := testnet.Serve(t, func(c net.Conn) {
		ip := c.RemoteAddr().(*net.TCPAddr).IP.String()
		line := make([]byte, 64)
		n, _ := c.Read(line)
		io.WriteString(c, ip+" "+string(line[:n]))
	})
	p := protocols.NewSSHProtocol(backend)
	p.Source = []string{"127.0.0.2-127.0.0.3"}
	pm := NewProtocolManager(WithLogger(discardLogger()))
	if err := pm.AddProtocol(p); err != nil {
		t.Fatal(err)
	}
	addr := serveTest(t, pm)
	for i, want := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.2"} {
		if got := roundTrip(t, addr, "SSH-2.0-x\r\n"); got != want+" SSH-2.0-x\r\n" {
			t.Fatalf("client %d: backend answered %q, want it from %s", i, got, want)
		}
	}
}
