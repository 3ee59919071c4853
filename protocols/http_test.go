package protocols

import (
	"bytes"
	"strings"
	"testing"

	"github.com/darkit/protoplex/internal/testnet"
)

func TestHTTPDetectLongLinePrefix(t *testing.T) {
	// Exactly at the limit: a line that fits is accepted, one byte more is not.
	head, tail := "GET /", " HTTP/1.1\r\n"
	fits := head + strings.Repeat("a", httpMaxRequestLine-len(head)-len(tail)) + tail
	if len(fits) != httpMaxRequestLine {
		t.Fatalf("bad test line length %d", len(fits))
	}
	if got := detectHTTP([]byte(fits + "Host: x\r\n")); got != Match {
		t.Fatalf("line of %d bytes: %v, want Match", len(fits), got)
	}
	over := head + "a" + fits[len(head):]
	if got := detectHTTP([]byte(over)); got != NoMatch {
		t.Fatalf("line of %d bytes: %v, want NoMatch", len(over), got)
	}
	if got := detectHTTP([]byte(over[:httpMaxRequestLine])); got != NoMatch {
		t.Fatalf("unterminated %d bytes: %v, want NoMatch", httpMaxRequestLine, got)
	}
}

// TestHTTPInspectHeaderBound: beyond the header bound the answer is final:
// no Host.
func TestHTTPInspectHeaderBound(t *testing.T) {
	big := "GET / HTTP/1.1\r\n" + strings.Repeat("X-Pad: "+strings.Repeat("p", 100)+"\r\n", httpMaxHeaderBlock/100)
	if md, ok := inspectHTTP([]byte(big)); !ok || md.Host != "" {
		t.Fatalf("oversized header block: %+v, %v; want no host, ok", md, ok)
	}
}

func TestHTTPProtocol(t *testing.T) {
	p := NewHTTPProtocol("127.0.0.1:80")
	w := NewHTTPWebDAVProtocol("x:1")
	if w.Name != "HTTP" || w.Detect([]byte("PROPFIND / HTTP/1.1\r\n")) != Match {
		t.Fatalf("HTTP+WebDAV protocol: %+v", w)
	}
	for _, m := range httpMethods {
		if bytes.IndexByte(p.FirstBytes, m[0]) < 0 {
			t.Errorf("FirstBytes %q lacks %q of %s", p.FirstBytes, m[0], m)
		}
		checkDetector(t, m, p.Detect, []byte(m+" / HTTP/1.1\r\n"), Match)
		if len(m) > httpMaxMethod {
			t.Errorf("method %s longer than httpMaxMethod", m)
		}
	}
}

func FuzzHTTP(f *testing.F) {
	fuzzCore(f, detectHTTP, inspectHTTP, fuzzSeeds(f, []string{"http-", "webdav-"},
		"GET http://a@b:1/ HTTP/1.1\r\n", "CONNECT [::1]:443 HTTP/1.0\r\nHost: x\r\n\r\n",
		"GET / HTTP/1.1\nHost: [::1]:80\n\n", h2Preface)...)
}

func BenchmarkDetectHTTP(b *testing.B) {
	b.Run("curl", func(b *testing.B) { benchDetect(b, detectHTTP, testnet.Flight(b, "http-curl.bin"), Match) })
	b.Run("propfind", func(b *testing.B) {
		benchDetect(b, detectHTTP, testnet.Flight(b, "webdav-curl-propfind.bin"), Match)
	})
	b.Run("reject-h2", func(b *testing.B) { benchDetect(b, detectHTTP, []byte(h2Preface), NoMatch) })
}

func BenchmarkInspectHTTP(b *testing.B) {
	data := testnet.Flight(b, "http-curl.bin")
	b.ReportAllocs()
	for b.Loop() {
		if md, ok := inspectHTTP(data); !ok || md.Host != "127.0.0.1" {
			b.Fatalf("inspect = %+v, %v", md, ok)
		}
	}
}
