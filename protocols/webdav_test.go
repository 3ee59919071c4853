package protocols

import (
	"bytes"
	"testing"

	"github.com/darkit/protoplex/internal/testnet"
)

func TestWebDAVProtocol(t *testing.T) {
	p := NewWebDAVProtocol("x:1")
	for _, m := range webdavMethods {
		if bytes.IndexByte(p.FirstBytes, m[0]) < 0 {
			t.Errorf("FirstBytes %q lacks %q of %s", p.FirstBytes, m[0], m)
		}
		if httpAnyEqual(httpPlainMethods, []byte(m)) {
			t.Errorf("%s is a plain HTTP method", m)
		}
		checkDetector(t, m, p.Detect, []byte(m+" /x HTTP/1.1\r\n"), Match)
	}
}

func FuzzWebDAV(f *testing.F) {
	fuzzCore(f, detectWebDAV, inspectHTTP, fuzzSeeds(f, []string{"webdav-"},
		"UPDATEREDIRECTREF /x HTTP/1.1\r\n", "VERSION-CONTROL / HTTP/1.0\n")...)
}

func BenchmarkDetectWebDAV(b *testing.B) {
	b.Run("propfind", func(b *testing.B) {
		benchDetect(b, detectWebDAV, testnet.Flight(b, "webdav-curl-propfind.bin"), Match)
	})
	b.Run("reject-get", func(b *testing.B) { benchDetect(b, detectWebDAV, testnet.Flight(b, "http-curl.bin"), NoMatch) })
}
