package protoplex

import (
	"bufio"
	"io"
	"net"
	"testing"

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
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go pm.Serve(b.Context(), ln)
	defer pm.Close()
	benchRoundTrips(b, ln.Addr().String())
}

func BenchmarkConnRoundTripDirect(b *testing.B) {
	benchRoundTrips(b, benchBackend(b))
}

func benchBackend(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := bufio.NewReader(c).ReadString('\n'); err == nil {
					io.WriteString(c, "SSH-2.0-backend\r\n")
				}
			}()
		}
	}()
	return ln.Addr().String()
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
