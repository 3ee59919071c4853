package protoplex

import (
	"bufio"
	"io"
	"net"
	"testing"

	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/protocols"
)

// BenchmarkConnRoundTrip: one whole client connection through protoplex —
// connect, send an SSH banner, get the backend's reply, close — against the
// same round trip straight to the backend (BenchmarkConnRoundTripDirect).
func BenchmarkConnRoundTrip(b *testing.B) {
	backend := benchBackend(b)
	pm := NewProtocolManager(WithLogger(discardLogger()))
	pm.AddProtocol(protocols.NewHTTPProtocol("127.0.0.1:1"))
	pm.AddProtocol(protocols.NewSSHProtocol(backend))
	b.Cleanup(func() { pm.Close() })
	benchRoundTrips(b, testnet.Start(b, pm.Serve))
}

func BenchmarkConnRoundTripDirect(b *testing.B) {
	benchRoundTrips(b, benchBackend(b))
}

// benchBackend answers the first line of each connection with an SSH
// banner and closes.
func benchBackend(b *testing.B) string {
	return testnet.Serve(b, func(c net.Conn) {
		if _, err := bufio.NewReader(c).ReadString('\n'); err == nil {
			io.WriteString(c, "SSH-2.0-backend\r\n")
		}
	})
}

func benchRoundTrips(b *testing.B, addr string) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 64)
		for pb.Next() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Error(err)
				return
			}
			io.WriteString(c, "SSH-2.0-bench\r\n")
			if _, err := io.ReadAtLeast(c, buf, 17); err != nil {
				b.Error(err)
			}
			c.Close()
		}
	})
}
