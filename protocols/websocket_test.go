package protocols

import (
	"strings"
	"testing"
)

const wsHandshake = "GET /chat HTTP/1.1\r\n" +
	"Host: server.example.com\r\n" +
	"Upgrade: websocket\r\n" +
	"Connection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
	"Origin: http://example.com\r\n" +
	"Sec-WebSocket-Protocol: chat, superchat\r\n" +
	"Sec-WebSocket-Version: 13\r\n\r\n"

func TestWebSocketDetect(t *testing.T) {
	pad := strings.Repeat("X-Pad: "+strings.Repeat("p", 100)+"\r\n", httpMaxHeaderBlock/100)
	runDetectCases(t, detectWebSocket, []detectCase{
		{"rfc 6455", wsHandshake, Match},
		{"case and list", "GET / HTTP/1.1\nhost: x\nCONNECTION: upgrade\nupgrade:  h2c, WebSocket \n\n", Match},
		{"versioned token", "GET / HTTP/1.1\r\nUpgrade: websocket/13\r\n\r\n", Match},
		{"frame after", "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n\x81\x85", Match},
		{"headers incomplete", "GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n", NeedMore},
		{"line only", "GET / HTTP/1.1\r\n", NeedMore},
		{"prefix", "GE", NeedMore},
		{"plain get", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", NoMatch},
		{"other upgrade", "GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n", NoMatch},
		{"token in other header", "GET / HTTP/1.1\r\nX-Upgrade: websocket\r\n\r\n", NoMatch},
		{"substring token", "GET / HTTP/1.1\r\nUpgrade: websockets\r\n\r\n", NoMatch},
		{"post", "POST / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", NoMatch},
		{"http 1.0", "GET / HTTP/1.0\r\nUpgrade: websocket\r\n\r\n", NoMatch},
		{"h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", NoMatch},
		{"redis", "GET key\r\n", NoMatch},
	})
	// A header block over the bound is rejected, whatever follows; spot
	// checks around the bound (a full split check would be quadratic).
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

func TestWebSocketProtocol(t *testing.T) {
	p := NewWebSocketProtocol("x:1")
	if p.Name != "WebSocket" || p.Specificity != 1 || string(p.FirstBytes) != "G" || p.Inspect == nil {
		t.Fatalf("unexpected protocol %+v", p)
	}
	if md, ok := p.Inspect([]byte(wsHandshake)); !ok || md.Host != "server.example.com" {
		t.Fatalf("inspect = %+v, %v", md, ok)
	}
}

func FuzzWebSocket(f *testing.F) {
	fuzzCore(f, detectWebSocket, inspectHTTP, fuzzSeeds(f, []string{"websocket-", "http-curl.bin"},
		wsHandshake, "GET / HTTP/1.1\r\nUpgrade: h2c, websocket/13\r\n\r\n")...)
}

func BenchmarkDetectWebSocket(b *testing.B) {
	b.Run("curl", func(b *testing.B) { benchDetect(b, detectWebSocket, coreFlight(b, "websocket-curl.bin"), Match) })
	b.Run("plain-get", func(b *testing.B) { benchDetect(b, detectWebSocket, coreFlight(b, "http-curl.bin"), NoMatch) })
}
