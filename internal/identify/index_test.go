package identify

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/protocols"
)

// randName is a name or pattern from a small alphabet, so that random
// routes and clients meet often: mixed case, trailing dots, wildcards,
// IPv6 brackets, spaces, empty and degenerate patterns.
func randName(rng *rand.Rand, pattern bool) string {
	labels := []string{"a", "b", "A", "xn--c", "ex", "EX", "com"}
	n := 1 + rng.IntN(3)
	var parts []string
	for range n {
		parts = append(parts, labels[rng.IntN(len(labels))])
	}
	s := strings.Join(parts, ".")
	switch rng.IntN(12) {
	case 0:
		s += "."
	case 1:
		s = "[" + s + "]"
	case 2:
		s = ""
	case 3:
		s = "a..b"
	}
	if pattern {
		switch rng.IntN(6) {
		case 0, 1:
			s = "*." + s
		case 2:
			s = " " + s + " "
		case 3:
			s = []string{"*.", "*", ".", "*.*.a"}[rng.IntN(4)]
		}
	}
	return s
}

func randConds(rng *rand.Rand, keys protocols.Keys) protocols.Conditions {
	var c protocols.Conditions
	list := func(alpn bool) []string {
		out := make([]string, 1+rng.IntN(4))
		for i := range out {
			if alpn {
				out[i] = []string{"h2", "http/1.1", "H2", "x"}[rng.IntN(4)]
			} else {
				out[i] = randName(rng, true)
			}
		}
		return out
	}
	if keys&protocols.SNIKey != 0 {
		c.SNI = list(false)
	}
	if keys&protocols.ALPNKey != 0 {
		c.ALPN = list(true)
	}
	if keys&protocols.HostKey != 0 {
		c.Hosts = list(false)
	}
	return c
}

func randMetadata(rng *rand.Rand) protocols.Metadata {
	md := protocols.Metadata{SNI: randName(rng, false), Host: randName(rng, false)}
	for range rng.IntN(3) {
		md.ALPN = append(md.ALPN, []string{"h2", "http/1.1", "H2", "x", "y"}[rng.IntN(5)])
	}
	return md
}

// TestIndexMatchesLinear: on random route conditions and metadata, Best is
// the first route whose Conditions.Accepts holds, below any limit.
func TestIndexMatchesLinear(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 3000 {
		conds := make([]protocols.Conditions, 1+rng.IntN(12))
		for i := range conds {
			conds[i] = randConds(rng, protocols.Keys(1+rng.IntN(7)))
		}
		x := NewIndex(conds)
		for range 20 {
			md := randMetadata(rng)
			limit := rng.IntN(len(conds) + 2)
			want := -1
			for i, c := range conds[:min(limit, len(conds))] {
				if c.Accepts(md) {
					want = i
					break
				}
			}
			if got := x.Best(md, limit); got != want {
				t.Fatalf("round %d: %+v, limit %d: Best %d, linear %d; conditions %+v", round, md, limit, got, want, conds)
			}
		}
	}
}

// Synthetic protocols for TestEvaluateMatchesLinear. A flight is a letter
// (the protocol), a byte the detector answers by (answers[i] for "mwn"[i];
// none: NeedMore) and, for the inspector, "sni;alpn,alpn;host$" (ok once the
// '$' came).
func synthDetect(letter byte, answers [3]protocols.Result) protocols.DetectFunc {
	return func(data []byte) protocols.Result {
		switch {
		case data[0] != letter:
			return protocols.NoMatch
		case len(data) < 2:
			return protocols.NeedMore
		}
		if i := strings.IndexByte("mwn", data[1]); i >= 0 {
			return answers[i]
		}
		return protocols.NoMatch
	}
}

var (
	usual   = [3]protocols.Result{protocols.Match, protocols.NeedMore, protocols.NoMatch}
	reverse = [3]protocols.Result{protocols.NeedMore, protocols.Match, protocols.NoMatch}
)

func synthInspect(data []byte) (protocols.Metadata, bool) {
	s := string(data[min(2, len(data)):])
	body, ok := strings.CutSuffix(s, "$")
	if !ok {
		return protocols.Metadata{}, false
	}
	f := strings.SplitN(body, ";", 3)
	for len(f) < 3 {
		f = append(f, "")
	}
	md := protocols.Metadata{SNI: f[0], Host: f[2]}
	if f[1] != "" {
		md.ALPN = strings.Split(f[1], ",")
	}
	return md, true
}

var (
	detectA = synthDetect('A', usual)
	detectB = synthDetect('B', usual)
)

// linearEvaluate is Evaluate as it was before groups and indexes: every
// candidate of the first byte's bucket in rank order, each running its
// detector and inspector.
func linearEvaluate(t *Table, data []byte) Verdict {
	if len(data) == 0 {
		return Verdict{}
	}
	pending, structural := false, false
	for _, r := range t.ranked {
		if len(r.spec.FirstBytes) > 0 && !slices.Contains(r.spec.FirstBytes, data[0]) {
			continue
		}
		res, st := r.spec.Detect(data), false
		if res == protocols.NeedMore {
			st = r.spec.Structural
		} else if res == protocols.Match && r.hasConds {
			md, ok := r.spec.Inspect(data)
			switch {
			case !ok:
				res, st = protocols.NeedMore, true
			case !r.conds.Accepts(md):
				res = protocols.NoMatch
			}
		}
		switch res {
		case protocols.Match:
			return Verdict{Best: r, Final: !pending, Structural: structural}
		case protocols.NeedMore:
			pending = true
			structural = structural || st
		}
	}
	return Verdict{Rejected: !pending, Structural: structural}
}

// TestEvaluateMatchesLinear: on random route sets (protocols that share a
// detector and some that only look alike, with and without conditions,
// random priorities, specificities and first bytes) and random flights,
// Evaluate answers what the linear walk answers.
func TestEvaluateMatchesLinear(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for round := range 2000 {
		var specs []RouteSpec
		closureC := synthDetect('C', usual) // shared by the routes that take it
		for range 1 + rng.IntN(30) {
			sp := protocols.Spec{Name: "A", Detect: detectA, Inspect: synthInspect, Structural: rng.IntN(2) == 0, Specificity: rng.IntN(2)}
			switch rng.IntN(5) {
			case 1:
				sp.Name, sp.Detect, sp.FirstBytes = "B", detectB, []byte("B")
			case 2:
				sp.Name, sp.Detect = "C", closureC
			case 3:
				sp.Name, sp.Detect = "C2", synthDetect('C', [2][3]protocols.Result{usual, reverse}[rng.IntN(2)]) // not shared
			case 4:
				sp.Name, sp.FirstBytes = "Aab", []byte("AB")
			}
			rs := RouteSpec{Spec: sp, Priority: rng.IntN(5) - 2}
			if rng.IntN(4) > 0 {
				rs.Conditions = randConds(rng, protocols.Keys(1+rng.IntN(7)))
			}
			specs = append(specs, rs)
		}
		tb, err := New(specs, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		for range 30 {
			var data []byte
			data = append(data, "ABCD"[rng.IntN(4)])
			if rng.IntN(6) > 0 {
				data = append(data, "mwnm"[rng.IntN(4)])
			}
			if rng.IntN(4) > 0 {
				md := randMetadata(rng)
				data = fmt.Appendf(data, "%s;%s;%s", md.SNI, strings.Join(md.ALPN, ","), md.Host)
				if rng.IntN(4) > 0 {
					data = append(data, '$')
				}
			}
			got, want := tb.Evaluate(data), linearEvaluate(tb, data)
			if got != want {
				t.Fatalf("round %d: %q: Evaluate %s, linear %s", round, data, verdictString(got), verdictString(want))
			}
		}
	}
}

func verdictString(v Verdict) string {
	best := "-"
	if v.Best != nil {
		best = fmt.Sprintf("%s#%d(rank %d)", v.Best.Name, v.Best.Index, v.Best.rank)
	}
	return fmt.Sprintf("{%s final=%t rejected=%t structural=%t}", best, v.Final, v.Rejected, v.Structural)
}

// TestNamesBounded: the names of all routes together are bounded, and a
// second fallback on UDP is refused as on TCP.
func TestNamesBounded(t *testing.T) {
	tls, _ := protocols.Describe("tls")
	names := make([]string, MaxNames/2+1)
	for i := range names {
		names[i] = fmt.Sprintf("n%d.example", i)
	}
	specs := []RouteSpec{{Spec: tls.Spec, Conditions: protocols.Conditions{SNI: names}}, {Spec: tls.Spec, Conditions: protocols.Conditions{SNI: names}}}
	if _, err := New(specs, 0, nil); err == nil || !strings.Contains(err.Error(), "at most 100000") {
		t.Fatalf("%d names: %v", 2*len(names), err)
	}
	if _, err := New(specs[:1], 0, nil); err != nil {
		t.Fatal(err)
	}
	quic, _ := protocols.Lookup("quic")
	dns, _ := protocols.Lookup("dns")
	if _, err := New([]RouteSpec{{Spec: quic("x:1").Spec(), Fallback: true}, {Spec: dns("x:1").Spec(), Fallback: true}}, 0, nil); err == nil || !strings.Contains(err.Error(), "UDP fallback") {
		t.Fatalf("two UDP fallbacks: %v", err)
	}
}

// FuzzEvaluateMatchesLinear: any bytes (recorded flights to start from),
// routed by every built-in plus TLS and HTTP routes that share their
// protocol (exact names, wildcards, ALPN, a name on two routes), give the
// answer of the linear walk.
func FuzzEvaluateMatchesLinear(f *testing.F) {
	for _, name := range []string{"tls-chromium.bin", "tls-openssl-sni.bin", "http-curl.bin", "websocket-curl.bin", "ssh-openssh.bin"} {
		f.Add(testnet.Flight(f, name))
	}
	f.Add(longHostRequest())
	ps := builtins("127.0.0.1:1")
	for i, c := range []protocols.Conditions{
		{SNI: []string{"a.example"}}, {SNI: []string{"*.example", "b.example."}, ALPN: []string{"h2"}},
		{SNI: []string{"A.EXAMPLE"}, Hosts: []string{"host.example"}}, {ALPN: []string{"http/1.1", "h2"}},
		{SNI: []string{"*.a.example"}}, {Hosts: []string{"host.example", "*.example"}}, {Hosts: []string{"[::1]"}},
	} {
		p := protocols.NewTLSProtocol(fmt.Sprintf("127.0.0.1:%d", 2+i))
		if len(c.Hosts) > 0 && len(c.SNI) == 0 {
			p = protocols.NewHTTPProtocol(fmt.Sprintf("127.0.0.1:%d", 2+i))
		}
		p.SNI, p.ALPN, p.Hosts = c.SNI, c.ALPN, c.Hosts
		p.Priority = i % 2
		ps = append(ps, p)
	}
	tb, err := New(routeSpecs(ps), 0, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if got, want := tb.Evaluate(data), linearEvaluate(tb, data); got != want {
			t.Fatalf("Evaluate %s, linear %s", verdictString(got), verdictString(want))
		}
	})
}

// TestParsedOncePerEvaluate: 1,000 routes of one protocol, by name, and one
// without a condition: one Evaluate runs the detector once and the
// inspector once, whatever the number of routes.
func TestParsedOncePerEvaluate(t *testing.T) {
	var detects, inspects int
	detect := func(data []byte) protocols.Result { detects++; return detectA(data) }
	inspect := func(data []byte) (protocols.Metadata, bool) { inspects++; return synthInspect(data) }
	var specs []RouteSpec
	for i := range 1000 {
		specs = append(specs, RouteSpec{Spec: protocols.Spec{Name: "A", Detect: detect, Inspect: inspect, Structural: true},
			Conditions: protocols.Conditions{SNI: []string{fmt.Sprintf("n%d.example", i)}}})
	}
	specs = append(specs, RouteSpec{Spec: protocols.Spec{Name: "A", Detect: detect, Inspect: inspect, Structural: true}})
	tb, err := New(specs, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		data string
		want int
	}{{"Amn999.example;;$", 999}, {"Amother.example;;$", 1000}} {
		detects, inspects = 0, 0
		if v := tb.Evaluate([]byte(c.data)); v.Best == nil || v.Best.Index != c.want || !v.Final {
			t.Fatalf("%s: %s, want route %d", c.data, verdictString(v), c.want)
		}
		if detects != 1 || inspects != 1 {
			t.Errorf("%s: %d detector and %d inspector runs, want 1 each", c.data, detects, inspects)
		}
	}
}
