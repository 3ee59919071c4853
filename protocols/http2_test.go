package protocols

import "testing"

const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

func TestHTTP2Detect(t *testing.T) {
	// SETTINGS frame (empty) after the preface, as clients send it.
	settings := "\x00\x00\x00\x04\x00\x00\x00\x00\x00"
	runDetectCases(t, detectHTTP2, []detectCase{
		{"preface", h2Preface, Match},
		{"preface settings", h2Preface + settings, Match},
		{"prefix", "PRI * HTTP/2.0\r\n", NeedMore},
		{"one byte", "P", NeedMore},
		{"http1 post", "POST / HTTP/1.1\r\n", NoMatch},
		{"bad tail", "PRI * HTTP/2.0\r\n\r\nSX\r\n\r\n", NoMatch},
		{"http 1.1 pri", "PRI * HTTP/1.1\r\n\r\n", NoMatch},
	})
	if p := NewHTTP2Protocol("x:1"); p.Name != "HTTP2" || string(p.FirstBytes) != "P" {
		t.Fatalf("unexpected protocol %+v", p)
	}
	if got := detectHTTP([]byte(h2Preface)); got != NoMatch {
		t.Fatalf("HTTP/1 detector on the h2 preface: %v", got)
	}
}

func FuzzHTTP2(f *testing.F) {
	fuzzCore(f, detectHTTP2, nil, fuzzSeeds(f, []string{"http2-"}, "PRI * HTTP/1.1\r\n")...)
}

func BenchmarkDetectHTTP2(b *testing.B) {
	benchDetect(b, detectHTTP2, coreFlight(b, "http2-curl.bin"), Match)
}
