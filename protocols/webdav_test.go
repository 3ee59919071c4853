package protocols

import (
	"bytes"
	"testing"
)

func TestWebDAVDetect(t *testing.T) {
	runDetectCases(t, detectWebDAV, []detectCase{
		{"propfind", "PROPFIND /dav/ HTTP/1.1\r\nHost: a\r\nDepth: 1\r\nContent-Length: 0\r\n\r\n", Match},
		{"proppatch", "PROPPATCH /f HTTP/1.1\r\n", Match},
		{"mkcol", "MKCOL /new/ HTTP/1.1\r\n", Match},
		{"copy", "COPY /a HTTP/1.1\r\nDestination: /b\r\n\r\n", Match},
		{"move", "MOVE /a HTTP/1.0\n", Match},
		{"lock", "LOCK /a HTTP/1.1\r\n", Match},
		{"unlock", "UNLOCK /a HTTP/1.1\r\n", Match},
		{"search", "SEARCH / HTTP/1.1\r\n", Match},
		{"report", "REPORT /cal/ HTTP/1.1\r\n", Match},
		{"mkcalendar", "MKCALENDAR /cal/x/ HTTP/1.1\r\n", Match},
		{"baseline-control", "BASELINE-CONTROL /x HTTP/1.1\r\n", Match},
		{"prefix", "PROPF", NeedMore},
		{"line incomplete", "PROPFIND /dav/ HTTP/1.", NeedMore},
		{"get is http", "GET /dav/ HTTP/1.1\r\n", NoMatch},
		{"put is http", "PUT /dav/f HTTP/1.1\r\n", NoMatch},
		{"options is http", "OPTIONS /dav/ HTTP/1.1\r\n", NoMatch},
		{"early reject", "PO", NoMatch},
		{"lower case", "propfind / HTTP/1.1\r\n", NoMatch},
		{"no version", "PROPFIND /\r\n", NoMatch},
		{"h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", NoMatch},
	})
}

func TestWebDAVProtocol(t *testing.T) {
	p := NewWebDAVProtocol("x:1")
	if p.Name != "WebDAV" || p.Specificity != 1 || p.Inspect == nil {
		t.Fatalf("unexpected protocol %+v", p)
	}
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
	b.Run("propfind", func(b *testing.B) { benchDetect(b, detectWebDAV, coreFlight(b, "webdav-curl-propfind.bin"), Match) })
	b.Run("reject-get", func(b *testing.B) { benchDetect(b, detectWebDAV, coreFlight(b, "http-curl.bin"), NoMatch) })
}
