package protocols

import (
	"strings"
	"testing"
)

func TestNormalizeName(t *testing.T) {
	for in, want := range map[string]string{
		"Example.COM":    "example.com",
		" example.com. ": "example.com",
		"*.Example.com":  "*.example.com",
		"[::1]":          "::1",
		"[2001:DB8::1]":  "2001:db8::1",
		"":               "",
		"ÄB":             "Äb", // ASCII only: IDNs are punycode on the wire
	} {
		if got := NormalizeName(in); got != want {
			t.Errorf("NormalizeName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAccepts(t *testing.T) {
	cases := []struct {
		name string
		p    Protocol
		md   Metadata
		want bool
	}{
		{"no conditions", Protocol{}, Metadata{}, true},
		{"sni exact", Protocol{SNI: []string{"a.example.com"}}, Metadata{SNI: "a.example.com"}, true},
		{"sni case", Protocol{SNI: []string{"A.Example.COM"}}, Metadata{SNI: "a.example.com"}, true},
		{"sni case md", Protocol{SNI: []string{"a.example.com"}}, Metadata{SNI: "A.EXAMPLE.com"}, true},
		{"sni trailing dot", Protocol{SNI: []string{"a.example.com."}}, Metadata{SNI: "a.example.com"}, true},
		{"sni other", Protocol{SNI: []string{"a.example.com"}}, Metadata{SNI: "b.example.com"}, false},
		{"sni missing", Protocol{SNI: []string{"a.example.com"}}, Metadata{}, false},
		{"sni second entry", Protocol{SNI: []string{"x.org", "a.example.com"}}, Metadata{SNI: "a.example.com"}, true},
		{"wildcard one label", Protocol{SNI: []string{"*.example.com"}}, Metadata{SNI: "a.example.com"}, true},
		{"wildcard deep", Protocol{SNI: []string{"*.example.com"}}, Metadata{SNI: "a.b.example.com"}, true},
		{"wildcard not apex", Protocol{SNI: []string{"*.example.com"}}, Metadata{SNI: "example.com"}, false},
		{"wildcard not suffix word", Protocol{SNI: []string{"*.example.com"}}, Metadata{SNI: "badexample.com"}, false},
		{"wildcard empty label", Protocol{SNI: []string{"*.example.com"}}, Metadata{SNI: ".example.com"}, false},
		{"wildcard case", Protocol{SNI: []string{"*.EXAMPLE.com"}}, Metadata{SNI: "X.example.COM"}, true},
		{"wildcard other domain", Protocol{SNI: []string{"*.example.com"}}, Metadata{SNI: "a.example.org"}, false},
		{"unicode fold", Protocol{SNI: []string{"s.example"}}, Metadata{SNI: "\u017f.example"}, false},
		{"alpn any", Protocol{ALPN: []string{"h2"}}, Metadata{ALPN: []string{"http/1.1", "h2"}}, true},
		{"alpn none", Protocol{ALPN: []string{"h2"}}, Metadata{ALPN: []string{"http/1.1"}}, false},
		{"alpn missing", Protocol{ALPN: []string{"h2"}}, Metadata{}, false},
		{"alpn exact case", Protocol{ALPN: []string{"h2"}}, Metadata{ALPN: []string{"H2"}}, false},
		{"host exact", Protocol{Hosts: []string{"www.example.com"}}, Metadata{Host: "www.example.com"}, true},
		{"host wildcard", Protocol{Hosts: []string{"*.example.com"}}, Metadata{Host: "api.example.com"}, true},
		{"host other", Protocol{Hosts: []string{"*.example.com"}}, Metadata{Host: "example.net"}, false},
		{"host ipv6 brackets", Protocol{Hosts: []string{"[::1]"}}, Metadata{Host: "::1"}, true},
		{"all hold", Protocol{SNI: []string{"*.example.com"}, ALPN: []string{"h2"}}, Metadata{SNI: "a.example.com", ALPN: []string{"h2"}}, true},
		{"one fails", Protocol{SNI: []string{"*.example.com"}, ALPN: []string{"h2"}}, Metadata{SNI: "a.example.com", ALPN: []string{"http/1.1"}}, false},
		{"empty pattern", Protocol{SNI: []string{""}}, Metadata{SNI: ""}, false},
		{"bare star is not a wildcard", Protocol{SNI: []string{"*"}}, Metadata{SNI: "a"}, false},
	}
	for _, c := range cases {
		if got := c.p.Accepts(c.md); got != c.want {
			t.Errorf("%s: Accepts(%+v) = %v, want %v", c.name, c.md, got, c.want)
		}
	}
}

func BenchmarkAccepts(b *testing.B) {
	p := &Protocol{SNI: []string{"x.example.org", "*.example.com"}, ALPN: []string{"h2"}}
	md := Metadata{SNI: "api.example.com", ALPN: []string{"http/1.1", "h2"}}
	b.ReportAllocs()
	for b.Loop() {
		if !p.Accepts(md) {
			b.Fatal("no match")
		}
	}
}

// coreDetectors are this file set's detectors, keyed by the flight-file
// prefix of the protocol each one must match.
var coreDetectors = []struct {
	prefix  string
	detect  DetectFunc
	matches []string // flight prefixes it matches
}{
	{"http", detectHTTP, []string{"http-", "websocket-", "webdav-"}},
	{"http2", detectHTTP2, []string{"http2-"}},
	{"websocket", detectWebSocket, []string{"websocket-"}},
	{"webdav", detectWebDAV, []string{"webdav-"}},
	{"tls", detectTLS, []string{"tls-"}},
	{"ssh", detectSSH, []string{"ssh-"}},
	{"redis", detectRedis, []string{"redis-"}},
}

// TestCoreFlights runs every detector on every recorded real first flight:
// its own protocol's flights must Match (also split at every offset), the
// other core protocols' flights must be rejected, and flights of protocols
// from other files must at least not Match.
func TestCoreFlights(t *testing.T) {
	flights := coreFlights(t, "")
	own := 0
	for _, d := range coreDetectors {
		for name, data := range flights {
			want, core := NoMatch, false
			for _, c := range coreDetectors {
				if strings.HasPrefix(name, c.prefix+"-") {
					core = true
				}
			}
			for _, m := range d.matches {
				if strings.HasPrefix(name, m) {
					want = Match
					own++
				}
			}
			if want == Match || core {
				checkDetector(t, d.prefix+" on "+name, d.detect, data, want)
				continue
			}
			if got := d.detect(data); got == Match {
				t.Errorf("%s detector matches %s", d.prefix, name)
			}
			checkMonotonic(t, d.prefix+" on "+name, d.detect, data)
		}
	}
	if own < 16 {
		t.Fatalf("only %d own flights found; run testdata/record.sh", own)
	}
}

// TestCoreRejectsOtherProtocols feeds hand-written first flights of the other
// built-in protocols (from their RFCs/specs) to this file set's detectors.
func TestCoreRejectsOtherProtocols(t *testing.T) {
	others := map[string]string{
		"mqtt 3.1.1":   "\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04test",
		"rdp":          "\x03\x00\x00\x13\x0e\xe0\x00\x00\x00\x00\x00\x01\x00\x08\x00\x03\x00\x00\x00",
		"socks5":       "\x05\x01\x00",
		"socks4":       "\x04\x01\x00\x50\x7f\x00\x00\x01user\x00",
		"postgres ssl": "\x00\x00\x00\x08\x04\xd2\x16\x2f",
		"dns":          "\x00\x1d\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01",
		"stun":         "\x00\x01\x00\x00\x21\x12\xa4\x42abcdefghijkl",
		"rtmp":         "\x03" + strings.Repeat("\x00", 1536),
		"openvpn":      "\x00\x0e\x38\x01\x02\x03\x04\x05\x06\x07\x08\x00\x00\x00\x00\x00",
		"rtsp":         "OPTIONS rtsp://example.com/media.mp4 RTSP/1.0\r\nCSeq: 1\r\n\r\n",
		"rtsp setup":   "SETUP rtsp://example.com/media.mp4/track1 RTSP/1.0\r\nCSeq: 3\r\n\r\n",
		"sip invite":   "INVITE sip:bob@biloxi.com SIP/2.0\r\nVia: SIP/2.0/TCP pc33.atlanta.com\r\n\r\n",
		"sip info":     "INFO sip:bob@biloxi.com SIP/2.0\r\n\r\n",
		"sip options":  "OPTIONS sip:carol@chicago.com SIP/2.0\r\n\r\n",
		"sip publish":  "PUBLISH sip:presentity@example.com SIP/2.0\r\n\r\n",
		"smtp ehlo":    "EHLO client.example.com\r\n",
	}
	for name, data := range others {
		for _, d := range coreDetectors {
			checkDetector(t, d.prefix+" on "+name, d.detect, []byte(data), NoMatch)
		}
	}
}

func TestCoreRegistered(t *testing.T) {
	for name, want := range map[string]string{
		"http": "HTTP", "HTTP2": "HTTP2", "WebSocket": "WebSocket", "webdav": "WebDAV",
		"TLS": "TLS", "ssh": "SSH", "Redis": "Redis",
	} {
		ctor, ok := Lookup(name)
		if !ok {
			t.Fatalf("%s not registered", name)
		}
		p := ctor("127.0.0.1:1")
		if p.Name != want || p.Target != "127.0.0.1:1" || p.Detect == nil || len(p.FirstBytes) == 0 {
			t.Errorf("%s: constructor gives %+v", name, p)
		}
	}
}
