package identify

import (
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/protocols"
)

// builtins returns one protocol per built-in, in registry (name) order.
func builtins(target string) []*protocols.Protocol {
	var ps []*protocols.Protocol
	for _, d := range protocols.Descriptors() {
		ps = append(ps, d.New(target))
	}
	return ps
}

// catalogue registers every built-in protocol (in name order), plus an SNI
// route, the way a full config would.
func catalogue(t testing.TB) []*protocols.Protocol {
	t.Helper()
	ps := builtins("127.0.0.1:1")
	tlsA := protocols.NewTLSProtocol("127.0.0.1:2")
	tlsA.SNI = []string{"a.example"}
	ps = append(ps, tlsA)
	return ps
}

// TestCachedAndUncachedAgreeOnCorpus: for every real first flight and every
// prefix of it (every way TCP could have split it), the cached engine gives
// exactly the uncached engine's verdict, on first sight and on repeats.
func TestCachedAndUncachedAgreeOnCorpus(t *testing.T) {
	ps := catalogue(t)
	plain := mustTable(t, ps...)
	counters := &CacheCounters{}
	cached, err := New(routeSpecs(ps), time.Minute, counters)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range testnet.Flights(t, "") {
		for round := 0; round < 2; round++ {
			for i := 1; i <= len(data); i++ {
				want, got := plain.Evaluate(data[:i]), cached.evaluate(data[:i], time.Now())
				if routeName(want) != routeName(got) || want.Final != got.Final || want.Rejected != got.Rejected {
					t.Fatalf("%s[:%d] round %d: cached %s/%v/%v, uncached %s/%v/%v", name, i, round,
						routeName(got), got.Final, got.Rejected, routeName(want), want.Final, want.Rejected)
				}
			}
		}
	}
	if l, h := counters.Load(); h == 0 || l == 0 {
		t.Fatalf("cache unused: lookups %d hits %d", l, h)
	}
}

func routeName(v Verdict) string {
	if v.Best == nil {
		return "-"
	}
	return label(v.Best)
}

// label names a route by its protocol and conditions, e.g.
// "TLS[sni=a.example]": conditional routes share their protocol's name.
func label(r *Route) string {
	s := r.Name
	for _, c := range []struct {
		key  string
		vals []string
	}{{"sni", r.conds.SNI}, {"alpn", r.conds.ALPN}, {"host", r.conds.Hosts}} {
		if len(c.vals) > 0 {
			s += "[" + c.key + "=" + strings.Join(c.vals, ",") + "]"
		}
	}
	return s
}

// TestCorpusRoutesToOwnProtocol: each whole flight is routed to the protocol
// its file is named after, with sub-protocols and SNI routes winning over
// their generic parents.
func TestCorpusRoutesToOwnProtocol(t *testing.T) {
	tb := mustTable(t, catalogue(t)...)
	for name, data := range testnet.Flights(t, "") {
		proto := strings.SplitN(name, "-", 2)[0]
		v := tb.Evaluate(data)
		if v.Best == nil || !v.Final {
			t.Errorf("%s: no final match (%+v)", name, v)
			continue
		}
		got := strings.ToLower(v.Best.Name)
		want := proto
		switch {
		case name == "tls-openssl-sni.bin" && bytesContain(data, "a.example"):
			want = "tls[sni=a.example]"
			got = strings.ToLower(routeName(v))
		case proto == "socks4" || proto == "socks5":
			// SOCKS flights may legitimately be taken by the generic "socks" entry.
			if got == "socks" {
				got = proto
			}
		}
		if got != want {
			t.Errorf("%s: routed to %s, want %s", name, got, want)
		}
	}
}

func bytesContain(b []byte, s string) bool { return strings.Contains(string(b), s) }

func TestWebSocketOutranksHTTP(t *testing.T) {
	tb := mustTable(t, protocols.NewHTTPProtocol("h:1"), protocols.NewWebSocketProtocol("w:1"))
	ws := []byte("GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	if v := tb.Evaluate(ws); routeName(v) != "WebSocket" || !v.Final {
		t.Fatalf("websocket request: %s final=%v", routeName(v), v.Final)
	}
	plain := []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if v := tb.Evaluate(plain); routeName(v) != "HTTP" || !v.Final {
		t.Fatalf("plain request: %s final=%v", routeName(v), v.Final)
	}
	// Request line only: HTTP matched, WebSocket still needs the headers.
	if v := tb.Evaluate(plain[:16]); routeName(v) != "HTTP" || v.Final {
		t.Fatalf("request line: %s final=%v", routeName(v), v.Final)
	}
}

func BenchmarkEvaluateCatalogue(b *testing.B) {
	tb := mustTable(b, builtins("x:1")...)
	for _, f := range []struct{ name, data string }{
		{"http", "GET / HTTP/1.1\r\nHost: example\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n"},
		{"ssh", "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"},
		{"redis", "*1\r\n$4\r\nPING\r\n"},
	} {
		data := []byte(f.data)
		b.Run(f.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				tb.Evaluate(data)
			}
		})
	}
}
