package identify

import (
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/darkit/protoplex/protocols"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func prefix(name string, prio int, pre string) *protocols.Protocol {
	return &protocols.Protocol{Name: name, Priority: prio, MatchStartBytes: [][]byte{[]byte(pre)}, FirstBytes: []byte{pre[0]}}
}

// routeSpecs is the engine's view of protocols: what each one is, its
// conditions, priority and fallback mark, in the same order.
func routeSpecs(ps []*protocols.Protocol) []RouteSpec {
	out := make([]RouteSpec, len(ps))
	for i, p := range ps {
		out[i] = RouteSpec{Spec: p.Spec(), Conditions: p.Conditions(), Priority: p.Priority, Fallback: p.Fallback}
	}
	return out
}

func mustTable(t testing.TB, ps ...*protocols.Protocol) *Table {
	t.Helper()
	tb, err := New(routeSpecs(ps), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

var lim = Limits{MinBytes: 1024, Timeout: 5 * time.Second, ServerFirstWait: 50 * time.Millisecond, SettleWait: 50 * time.Millisecond}

// identifyChunks runs Identify against a client that writes chunks one by one
// (each a separate read on the server side: net.Pipe is unbuffered).
func identifyChunks(t *testing.T, tb *Table, l Limits, chunks ...string) Result {
	t.Helper()
	return identifyClient(t, tb, l, false, chunks...)
}

func identifyClient(t *testing.T, tb *Table, l Limits, closeAfter bool, chunks ...string) Result {
	t.Helper()
	srv, cli := net.Pipe()
	defer srv.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, c := range chunks {
			if _, err := cli.Write([]byte(c)); err != nil {
				return
			}
		}
		if closeAfter {
			cli.Close()
		}
	}()
	buf := make([]byte, 4096)
	res := tb.Identify(srv, buf, 0, l)
	cli.Close()
	<-done
	return res
}

func TestIdentifyNeedMoreAcrossReads(t *testing.T) {
	tb := mustTable(t, prefix("LONG", 0, "HELLO-WORLD"), prefix("OTHER", 0, "HELP"))
	res := identifyChunks(t, tb, lim, "HE", "LL", "O-WO", "RLD")
	if res.Route == nil || res.Route.Name != "LONG" || res.N != 11 {
		t.Fatalf("got %+v", res)
	}
}

func TestIdentifyPriorityAndTies(t *testing.T) {
	a, b, c := prefix("A", 5, "X"), prefix("B", 1, "X"), prefix("C", 1, "X")
	tb := mustTable(t, a, b, c)
	if v := tb.Evaluate([]byte("X")); v.Best.Name != "B" || !v.Final {
		t.Fatalf("lowest priority first, registration order on ties: got %+v", v.Best.Name)
	}
	// Same priorities, reversed registration: the first registered wins.
	tb = mustTable(t, c, b)
	if v := tb.Evaluate([]byte("X")); v.Best.Name != "C" {
		t.Fatalf("tie must go to registration order, got %s", v.Best.Name)
	}
}

func TestHigherRankedNeedMoreDefersMatch(t *testing.T) {
	generic := prefix("GENERIC", 5, "AB")
	specific := prefix("SPECIFIC", 0, "ABCD")
	tb := mustTable(t, generic, specific)
	if v := tb.Evaluate([]byte("AB")); v.Best == nil || v.Best.Name != "GENERIC" || v.Final {
		t.Fatalf("AB: want a non-final GENERIC match, got %+v", v)
	}
	if v := tb.Evaluate([]byte("ABCD")); v.Best.Name != "SPECIFIC" || !v.Final {
		t.Fatalf("ABCD: want final SPECIFIC")
	}
	if v := tb.Evaluate([]byte("ABX")); v.Best.Name != "GENERIC" || !v.Final {
		t.Fatalf("ABX: SPECIFIC rejected, GENERIC final")
	}
	// A client that sends "AB" and waits gets GENERIC after the settle wait.
	res := identifyChunks(t, tb, lim, "AB")
	if res.Route == nil || res.Route.Name != "GENERIC" {
		t.Fatalf("settle: got %+v", res)
	}
}

func TestAllRejectAndFallback(t *testing.T) {
	tb := mustTable(t, prefix("A", 0, "AAA"))
	res := identifyChunks(t, tb, lim, "ZZZ")
	if res.Route != nil || res.Failure != NoMatch || res.N != 3 {
		t.Fatalf("got %+v", res)
	}
	fb := prefix("FB", 0, "\x00never")
	fb.Fallback = true
	tb = mustTable(t, prefix("A", 0, "AAA"), fb)
	res = identifyChunks(t, tb, lim, "ZZZ")
	if res.Route == nil || res.Route.Name != "FB" || !res.Fallback || res.Failure != NoMatch {
		t.Fatalf("fallback: got %+v", res)
	}
}

func TestTimeoutWithoutServerFirst(t *testing.T) {
	tb := mustTable(t, prefix("A", 0, "AAAA"))
	l := lim
	l.Timeout = 50 * time.Millisecond
	res := identifyChunks(t, tb, l, "AA")
	if res.Route != nil || res.Failure != Timeout || res.N != 2 {
		t.Fatalf("got %+v", res)
	}
}

func TestSilenceChoosesServerFirst(t *testing.T) {
	smtp := &protocols.Protocol{Name: "SMTP", MatchStartBytes: [][]byte{[]byte("EHLO ")},
		EstablishConnection: []protocols.EstablishConnection{{}}}
	tb := mustTable(t, prefix("A", 0, "AAAA"), smtp)
	res := identifyChunks(t, tb, lim)
	if res.Route == nil || res.Route.Name != "SMTP" || !res.Silent || res.N != 0 {
		t.Fatalf("got %+v", res)
	}
	// A client that speaks is not taken for silent.
	res = identifyChunks(t, tb, lim, "AAAA")
	if res.Route == nil || res.Route.Name != "A" || res.Silent {
		t.Fatalf("got %+v", res)
	}
}

func TestMinBytesDecides(t *testing.T) {
	// The regex route never becomes certain: at MinBytes the engine decides.
	p := &protocols.Protocol{Name: "WIN", MatchBytes: [][]byte{[]byte("needle")}}
	tb := mustTable(t, p)
	l := lim
	l.MinBytes = 8
	if res := identifyChunks(t, tb, l, "xxxxxxxx"); res.Failure != BufferFull || res.Route != nil {
		t.Fatalf("got %+v", res)
	}
}

func TestClientClosedBeforeDecision(t *testing.T) {
	tb := mustTable(t, prefix("A", 0, "AAAA"))
	if res := identifyClient(t, tb, lim, true, "A"); res.Failure != ClientClosed {
		t.Fatalf("got %+v", res)
	}
}

func TestFirstByteIndex(t *testing.T) {
	wild := &protocols.Protocol{Name: "W", MatchBytes: [][]byte{[]byte("zz")}}
	tb := mustTable(t, prefix("A", 0, "A"), prefix("B", 0, "B"), wild)
	if tb.Candidates('A') != 2 || tb.Candidates('B') != 2 || tb.Candidates('C') != 1 {
		t.Fatalf("buckets: A=%d B=%d C=%d", tb.Candidates('A'), tb.Candidates('B'), tb.Candidates('C'))
	}
}

func TestCacheNeverChangesResult(t *testing.T) {
	ps := []*protocols.Protocol{prefix("A", 0, "AB"), prefix("B", 0, "ABC"), prefix("C", 3, "Q")}
	plain := mustTable(t, ps...)
	counters := &CacheCounters{}
	cached, err := New(routeSpecs(ps), time.Minute, counters)
	if err != nil {
		t.Fatal(err)
	}
	inputs := []string{"A", "AB", "ABC", "ABD", "Q", "QQ", "Z", "ABCDEF"}
	for round := 0; round < 3; round++ {
		for _, in := range inputs {
			want, got := plain.Evaluate([]byte(in)), cached.evaluate([]byte(in), time.Now())
			if name(want) != name(got) || want.Final != got.Final || want.Rejected != got.Rejected {
				t.Fatalf("%q: cached %+v != uncached %+v", in, got, want)
			}
		}
	}
	if _, hits := counters.Load(); hits == 0 {
		t.Fatal("cache never hit")
	}
}

func TestDuplicateFallbackRejected(t *testing.T) {
	a, b := prefix("A", 0, "A"), prefix("B", 0, "B")
	a.Fallback, b.Fallback = true, true
	if _, err := New(routeSpecs([]*protocols.Protocol{a, b}), 0, nil); err == nil {
		t.Fatal("two fallbacks accepted")
	}
}

func name(v Verdict) string {
	if v.Best == nil {
		return ""
	}
	return v.Best.Name
}

func TestPerReadTimeout(t *testing.T) {
	tb := mustTable(t, prefix("A", 0, "AAAAAA"))
	l := lim
	l.ReadTimeout = 50 * time.Millisecond
	srv, cli := net.Pipe()
	defer srv.Close()
	go func() {
		cli.Write([]byte("AA"))
		// then silence: the per-read timeout fires long before Timeout (5s)
	}()
	start := time.Now()
	res := tb.Identify(srv, make([]byte, 64), 0, l)
	cli.Close()
	if res.Failure != Timeout || time.Since(start) > 4*time.Second {
		t.Fatalf("got %+v after %v", res, time.Since(start))
	}
}

func TestRoutesInputOrderRankedOrder(t *testing.T) {
	low, high := prefix("LOW", 9, "X"), prefix("HIGH", 1, "X")
	tb := mustTable(t, low, high)
	for i, r := range tb.Routes() {
		if r.Index != i {
			t.Fatalf("Routes()[%d] = %s, Index %d", i, r.Name, r.Index)
		}
	}
	if got := tb.Routes()[0].Name; got != "LOW" {
		t.Fatalf("Routes()[0] = %s, want the first input LOW", got)
	}
	ranked := tb.Ranked()
	if ranked[0].Name != "HIGH" || ranked[0].Rank() != 0 || ranked[0].Index != 1 || ranked[1].Rank() != 1 {
		t.Fatalf("ranked: %s (rank %d, index %d), %s", ranked[0].Name, ranked[0].Rank(), ranked[0].Index, ranked[1].Name)
	}
	if v := tb.Evaluate([]byte("X")); v.Best != ranked[0] {
		t.Fatalf("Evaluate picked %s, want the top-ranked HIGH", v.Best.Name)
	}
}

func TestNewRejects(t *testing.T) {
	for name, rs := range map[string]RouteSpec{
		"no name":     {Spec: protocols.Spec{Detect: func([]byte) protocols.Result { return protocols.Match }}},
		"no detector": {Spec: protocols.Spec{Name: "X"}},
		"conditions without inspector": {
			Spec:       protocols.Spec{Name: "X", Detect: func([]byte) protocols.Result { return protocols.Match }},
			Conditions: protocols.Conditions{Hosts: []string{"a.example"}},
		},
	} {
		if _, err := New([]RouteSpec{rs}, 0, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestUDPOnlyRoutesLeftOut: a route whose protocol is not on TCP keeps its
// index but is never a stream's candidate, fallback or silence choice, and
// may carry conditions its stream side cannot inspect.
func TestUDPOnlyRoutesLeftOut(t *testing.T) {
	udpOnly := protocols.Spec{Name: "Q", Detect: func([]byte) protocols.Result { return protocols.Match },
		Transports: protocols.UDP, ServerFirst: true}
	tcp := protocols.Spec{Name: "T", Detect: func([]byte) protocols.Result { return protocols.Match }, Transports: protocols.TCP}
	tb, err := New([]RouteSpec{
		{Spec: udpOnly, Conditions: protocols.Conditions{SNI: []string{"a.example"}}, Fallback: true},
		{Spec: tcp},
	}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(tb.Routes()) != 2 || tb.Routes()[0].Rank() != -1 || len(tb.Ranked()) != 1 || tb.Fallback() != nil || tb.ServerFirst() != nil {
		t.Fatalf("routes %d, UDP rank %d, ranked %d, fallback %v, silence %v", len(tb.Routes()), tb.Routes()[0].Rank(), len(tb.Ranked()), tb.Fallback(), tb.ServerFirst())
	}
	if v := tb.Evaluate([]byte("x")); v.Best == nil || v.Best.Name != "T" {
		t.Fatalf("best %v, want the TCP route", v.Best)
	}
}
