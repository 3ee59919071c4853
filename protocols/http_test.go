package protocols

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

type detectCase struct {
	name string
	data string
	want Result
}

func runDetectCases(t *testing.T, detect DetectFunc, cases []detectCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			checkDetector(t, c.name, detect, []byte(c.data), c.want)
		})
	}
}

// coreFlight reads a recorded first flight from testdata/flights.
func coreFlight(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "flights", name))
	if err != nil {
		t.Fatalf("flight %s: %v (recreate with testdata/record.sh)", name, err)
	}
	return b
}

// coreFlights returns every recorded flight whose file name starts with
// prefix ("http-", "tls-"...), keyed by file name.
func coreFlights(t testing.TB, prefix string) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", "flights", prefix+"*.bin"))
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string][]byte, len(paths))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(p)] = b
	}
	return out
}

func TestHTTPDetect(t *testing.T) {
	long := "GET /" + strings.Repeat("a", httpMaxRequestLine) + " HTTP/1.1\r\n"
	runDetectCases(t, detectHTTP, []detectCase{
		{"get 1.1", "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", Match},
		{"line only", "GET /index.html HTTP/1.1\r\n", Match},
		{"get 1.0 lf", "GET / HTTP/1.0\n", Match},
		{"head", "HEAD /x?y=1 HTTP/1.1\r\n", Match},
		{"post", "POST /api HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", Match},
		{"put", "PUT /f HTTP/1.1\r\n", Match},
		{"delete", "DELETE /f HTTP/1.1\r\n", Match},
		{"options star", "OPTIONS * HTTP/1.1\r\n", Match},
		{"trace", "TRACE / HTTP/1.1\r\n", Match},
		{"connect", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", Match},
		{"patch", "PATCH /r HTTP/1.1\r\n", Match},
		{"absolute form", "GET http://example.com/ HTTP/1.1\r\n", Match},
		{"utf8 path", "GET /caf\xc3\xa9 HTTP/1.1\r\n", Match},
		{"propfind", "PROPFIND /dav/ HTTP/1.1\r\nDepth: 1\r\n\r\n", Match},
		{"mkcalendar", "MKCALENDAR /cal/ HTTP/1.1\r\n", Match},
		{"version-control", "VERSION-CONTROL /x HTTP/1.1\r\n", Match},
		{"no headers yet", "GET / HTTP/1.1\r", NeedMore},
		{"partial method", "GE", NeedMore},
		{"partial version", "GET / HTT", NeedMore},
		{"partial target", "GET /abc", NeedMore},
		{"empty", "", NeedMore},
		{"h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", NoMatch},
		{"lower-case method", "get / HTTP/1.1\r\n", NoMatch},
		{"unknown method", "FETCH / HTTP/1.1\r\n", NoMatch},
		{"method too long", "PROPFINDPROPFINDPROPFIND / HTTP/1.1\r\n", NoMatch},
		{"http 0.9", "GET /\r\n", NoMatch},
		{"http 2.0 line", "GET / HTTP/2.0\r\n", NoMatch},
		{"http 1.2", "GET / HTTP/1.2\r\n", NoMatch},
		{"lower version", "GET / http/1.1\r\n", NoMatch},
		{"double space", "GET  / HTTP/1.1\r\n", NoMatch},
		{"space in target", "GET /a b HTTP/1.1\r\n", NoMatch},
		{"control in target", "GET /a\x01 HTTP/1.1\r\n", NoMatch},
		{"bad target start", "GET ?x HTTP/1.1\r\n", NoMatch},
		{"cr without lf", "GET / HTTP/1.1\rX", NoMatch},
		{"trailing junk", "GET / HTTP/1.1 \r\n", NoMatch},
		{"rtsp", "OPTIONS rtsp://example.com/media RTSP/1.0\r\nCSeq: 1\r\n\r\n", NoMatch},
		{"sip", "OPTIONS sip:bob@example.com SIP/2.0\r\n", NoMatch},
		{"redis inline get", "GET key\r\n", NoMatch},
		{"too long", long, NoMatch},
		{"binary", "\x16\x03\x01\x02\x00\x01", NoMatch},
	})
}

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

func TestHTTPInspect(t *testing.T) {
	cases := []struct {
		name string
		data string
		host string
		ok   bool
	}{
		{"host", "GET / HTTP/1.1\r\nHost: Example.COM\r\n\r\n", "example.com", true},
		{"host port", "GET / HTTP/1.1\r\nUser-Agent: x\r\nhost: www.example.com:8080\r\n", "www.example.com", true},
		{"ipv6", "GET / HTTP/1.1\r\nHost: [2001:DB8::1]:443\r\n", "2001:db8::1", true},
		{"ipv6 no port", "GET / HTTP/1.1\r\nHost: [::1]\r\n", "::1", true},
		{"trailing dot", "GET / HTTP/1.1\r\nHost: example.com.\r\n", "example.com", true},
		{"spaces", "GET / HTTP/1.1\r\nHOST:\t example.org \r\n", "example.org", true},
		{"lf only", "GET / HTTP/1.0\nHost: a.b\n\n", "a.b", true},
		{"first host wins", "GET / HTTP/1.1\r\nHost: one\r\nHost: two\r\n\r\n", "one", true},
		{"no host", "GET / HTTP/1.0\r\nAccept: */*\r\n\r\n", "", true},
		{"waiting for host", "GET / HTTP/1.1\r\nAccept: */*\r\n", "", false},
		{"host line incomplete", "GET / HTTP/1.1\r\nHost: exam", "", false},
		{"line incomplete", "GET / HTT", "", false},
		{"absolute form", "GET http://User@Proxy.Example:81/x HTTP/1.1\r\nHost: other\r\n\r\n", "proxy.example", true},
		{"absolute https", "GET https://a.example HTTP/1.1\r\n", "a.example", true},
		{"connect", "CONNECT Tunnel.Example:443 HTTP/1.1\r\n", "tunnel.example", true},
		{"not http", "SSH-2.0-x\r\n", "", true},
		{"hostname header", "GET / HTTP/1.1\r\nHostname: nope\r\nHost: yes\r\n", "yes", true},
	}
	for _, c := range cases {
		md, ok := inspectHTTP([]byte(c.data))
		if ok != c.ok || md.Host != c.host || md.SNI != "" || md.ALPN != nil {
			t.Errorf("%s: inspect = %+v, %v; want host %q, %v", c.name, md, ok, c.host, c.ok)
		}
		checkInspectMonotonic(t, c.name, inspectHTTP, []byte(c.data))
	}
	// Beyond the header bound the answer is final: no Host.
	big := "GET / HTTP/1.1\r\n" + strings.Repeat("X-Pad: "+strings.Repeat("p", 100)+"\r\n", httpMaxHeaderBlock/100)
	if md, ok := inspectHTTP([]byte(big)); !ok || md.Host != "" {
		t.Fatalf("oversized header block: %+v, %v; want no host, ok", md, ok)
	}
}

// checkInspectMonotonic asserts that once a prefix of data gets ok from
// inspect, every longer prefix gets ok and the same metadata.
func checkInspectMonotonic(t *testing.T, name string, inspect InspectFunc, data []byte) {
	t.Helper()
	var first Metadata
	decided := false
	for i := 0; i <= len(data); i++ {
		md, ok := inspect(data[:i])
		if decided && (!ok || !reflect.DeepEqual(md, first)) {
			t.Fatalf("%s: inspect of %d bytes = %+v, %v after a shorter prefix gave %+v", name, i, md, ok, first)
		}
		if ok && !decided {
			first, decided = md, true
		}
	}
}

func TestHTTPProtocol(t *testing.T) {
	p := NewHTTPProtocol("127.0.0.1:80")
	if p.Name != "HTTP" || p.Target != "127.0.0.1:80" || p.Specificity != 0 || p.Priority != 0 || p.Inspect == nil {
		t.Fatalf("unexpected protocol %+v", p)
	}
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

func TestHTTPInspectFlights(t *testing.T) {
	for name, want := range map[string]string{
		"http-curl.bin":            "127.0.0.1",
		"http-curl-post.bin":       "127.0.0.1",
		"http-wget.bin":            "127.0.0.1",
		"http-curl-proxy.bin":      "www.example.com",
		"websocket-curl.bin":       "127.0.0.1",
		"webdav-curl-propfind.bin": "127.0.0.1",
	} {
		data := coreFlight(t, name)
		if md, ok := inspectHTTP(data); !ok || md.Host != want {
			t.Errorf("%s: inspect = %+v, %v; want host %q", name, md, ok, want)
		}
		checkInspectMonotonic(t, name, inspectHTTP, data)
	}
}

// fuzzCore fuzzes a detector (and its inspector, if any): no panic, data not
// modified, and a final answer on a prefix (split at a random point) is the
// answer on the whole input, as is an inspector's ok metadata.
func fuzzCore(f *testing.F, detect DetectFunc, inspect InspectFunc, seeds ...[]byte) {
	f.Helper()
	for _, s := range seeds {
		f.Add(s, uint(len(s)/2))
	}
	f.Fuzz(func(t *testing.T, data []byte, split uint) {
		orig := bytes.Clone(data)
		k := int(split % uint(len(data)+1))
		whole, part := detect(data), detect(data[:k])
		if part != NeedMore && part != whole {
			t.Fatalf("detect: %d of %d bytes say %v, all say %v", k, len(data), part, whole)
		}
		if inspect != nil {
			md, ok := inspect(data)
			mdk, okk := inspect(data[:k])
			if okk && (!ok || !reflect.DeepEqual(md, mdk)) {
				t.Fatalf("inspect: %d of %d bytes give %+v, all give %+v, %v", k, len(data), mdk, md, ok)
			}
		}
		if !bytes.Equal(data, orig) {
			t.Fatalf("data modified")
		}
	})
}

// fuzzSeeds returns the recorded flights with the given prefixes plus extra.
func fuzzSeeds(f *testing.F, prefixes []string, extra ...string) [][]byte {
	var out [][]byte
	for _, p := range prefixes {
		for _, b := range coreFlights(f, p) {
			out = append(out, b)
		}
	}
	for _, e := range extra {
		out = append(out, []byte(e))
	}
	return out
}

func FuzzHTTP(f *testing.F) {
	fuzzCore(f, detectHTTP, inspectHTTP, fuzzSeeds(f, []string{"http-", "webdav-"},
		"GET http://a@b:1/ HTTP/1.1\r\n", "CONNECT [::1]:443 HTTP/1.0\r\nHost: x\r\n\r\n",
		"GET / HTTP/1.1\nHost: [::1]:80\n\n", h2Preface)...)
}

// benchDetect reports the cost of one detector call on data, which must
// give want.
func benchDetect(b *testing.B, detect DetectFunc, data []byte, want Result) {
	b.Helper()
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if got := detect(data); got != want {
			b.Fatalf("got %v, want %v", got, want)
		}
	}
}

func BenchmarkDetectHTTP(b *testing.B) {
	b.Run("curl", func(b *testing.B) { benchDetect(b, detectHTTP, coreFlight(b, "http-curl.bin"), Match) })
	b.Run("propfind", func(b *testing.B) { benchDetect(b, detectHTTP, coreFlight(b, "webdav-curl-propfind.bin"), Match) })
	b.Run("reject-h2", func(b *testing.B) { benchDetect(b, detectHTTP, []byte(h2Preface), NoMatch) })
}

func BenchmarkInspectHTTP(b *testing.B) {
	data := coreFlight(b, "http-curl.bin")
	b.ReportAllocs()
	for b.Loop() {
		if md, ok := inspectHTTP(data); !ok || md.Host != "127.0.0.1" {
			b.Fatalf("inspect = %+v, %v", md, ok)
		}
	}
}
