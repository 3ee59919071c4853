package protocols

import (
	"strings"
	"testing"

	"github.com/darkit/protoplex/internal/testnet"
)

const wsHandshake = "GET /chat HTTP/1.1\r\n" +
	"Host: server.example.com\r\n" +
	"Upgrade: websocket\r\n" +
	"Connection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
	"Origin: http://example.com\r\n" +
	"Sec-WebSocket-Protocol: chat, superchat\r\n" +
	"Sec-WebSocket-Version: 13\r\n\r\n"

// TestWebSocketHeaderBound: a header block over the bound is rejected,
// whatever follows; spot checks around the bound (a full split check would
// be quadratic).
func TestWebSocketHeaderBound(t *testing.T) {
	pad := strings.Repeat("X-Pad: "+strings.Repeat("p", 100)+"\r\n", httpMaxHeaderBlock/100)
	big := []byte("GET / HTTP/1.1\r\n" + pad + "Upgrade: websocket\r\n\r\n")
	for _, n := range []int{httpMaxHeaderBlock - 1, httpMaxHeaderBlock, httpMaxHeaderBlock + 1, len(big)} {
		want := NoMatch
		if n < httpMaxHeaderBlock {
			want = NeedMore
		}
		if got := detectWebSocket(big[:n]); got != want {
			t.Fatalf("header block of %d bytes: %v, want %v", n, got, want)
		}
	}
}

func FuzzWebSocket(f *testing.F) {
	fuzzCore(f, detectWebSocket, inspectHTTP, fuzzSeeds(f, []string{"websocket-", "http-curl"},
		wsHandshake, "GET / HTTP/1.1\r\nUpgrade: h2c, websocket/13\r\n\r\n")...)
}

func BenchmarkDetectWebSocket(b *testing.B) {
	b.Run("curl", func(b *testing.B) {
		benchDetect(b, detectWebSocket, testnet.Flight(b, "websocket-curl.bin"), Match)
	})
	b.Run("plain-get", func(b *testing.B) { benchDetect(b, detectWebSocket, testnet.Flight(b, "http-curl.bin"), NoMatch) })
}
