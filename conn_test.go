package protoplex

import (
	"io"
	"net"
	"os"
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
		return goServer(t, func(c net.Conn) {
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
