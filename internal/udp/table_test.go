package udp

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/darkit/protoplex/internal/identify"
	"github.com/darkit/protoplex/internal/metrics"
	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/protocols"
)

// linearDecide is Decide as it was before groups and indexes: every route
// in rank order runs its detector and inspector.
func linearDecide(t *Table, dgs [][]byte, final bool) (*Route, bool) {
	ranked := slices.Clone(t.routes)
	slices.SortFunc(ranked, func(a, b *Route) int { return a.rank - b.rank })
	var best *Route
	waiting := false
	for _, c := range ranked {
		if c.Detect == nil {
			continue
		}
		res := c.Detect(dgs)
		if res == protocols.Match && c.Conditions.Keys() != 0 {
			if c.Inspect == nil {
				res = protocols.NoMatch
			} else if md, ok := c.Inspect(dgs); !ok {
				res = protocols.NeedMore
			} else if !c.Conditions.Accepts(md) {
				res = protocols.NoMatch
			}
		}
		switch res {
		case protocols.Match:
			if best == nil {
				best = c
			}
			if !waiting {
				return c, false
			}
		case protocols.NeedMore:
			if best == nil {
				waiting = true
			}
		}
	}
	if waiting && !final {
		return nil, true
	}
	if best != nil {
		return best, false
	}
	if t.fallback != nil && len(t.fallback.Targets) > 0 {
		return t.fallback, false
	}
	return nil, false
}

// dgDetect answers by the first datagram's second byte when its first is
// letter: answers[i] for "mwn"[i]; a first datagram of one byte: NeedMore.
func dgDetect(letter byte, answers [3]protocols.Result) protocols.DatagramFunc {
	return func(dgs [][]byte) protocols.Result {
		d := dgs[0]
		switch {
		case d[0] != letter:
			return protocols.NoMatch
		case len(d) < 2:
			return protocols.NeedMore
		}
		if i := strings.IndexByte("mwn", d[1]); i >= 0 {
			return answers[i]
		}
		return protocols.NoMatch
	}
}

// dgInspect reads "sni;alpn,alpn" from the second datagram; NeedMore
// until it comes.
func dgInspect(dgs [][]byte) (protocols.Metadata, bool) {
	if len(dgs) < 2 {
		return protocols.Metadata{}, false
	}
	sni, alpn, _ := strings.Cut(string(dgs[1]), ";")
	md := protocols.Metadata{SNI: sni}
	if alpn != "" {
		md.ALPN = strings.Split(alpn, ",")
	}
	return md, true
}

var (
	usual    = [3]protocols.Result{protocols.Match, protocols.NeedMore, protocols.NoMatch}
	reversed = [3]protocols.Result{protocols.NeedMore, protocols.Match, protocols.NoMatch}
	dgA      = dgDetect('A', usual)
)

// TestDecideMatchesLinear: on random route sets and flows, Decide answers
// what the linear walk over the same ranking answers.
func TestDecideMatchesLinear(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	names := []string{"a.example", "*.example", "B.example.", "x", "*.a.example"}
	alpns := []string{"h3", "doq", "x"}
	pick := func(from []string) []string {
		out := make([]string, 1+rng.IntN(3))
		for i := range out {
			out[i] = from[rng.IntN(len(from))]
		}
		return out
	}
	st := metrics.New().UDP
	for round := range 2000 {
		dgB := dgDetect('B', [2][3]protocols.Result{usual, reversed}[rng.IntN(2)])
		var routes []Route
		for i := range 1 + rng.IntN(20) {
			r := Route{Name: fmt.Sprint("r", i), Detect: dgA, Inspect: dgInspect, Priority: rng.IntN(3), Targets: []string{"x:1"}}
			switch rng.IntN(5) {
			case 1:
				r.Detect = dgB
			case 2:
				r.Detect = dgDetect('A', reversed) // not shared
			case 3:
				r.Inspect = nil
			case 4:
				r.Detect = nil
			}
			if rng.IntN(3) > 0 {
				if rng.IntN(2) == 0 {
					r.Conditions.SNI = pick(names)
				}
				if rng.IntN(2) == 0 {
					r.Conditions.ALPN = pick(alpns)
				}
			}
			r.Fallback = i == 0 && rng.IntN(3) == 0 && r.Conditions.Keys() == 0
			routes = append(routes, r)
		}
		tbl := NewTable(routes, st)
		for range 20 {
			dgs := [][]byte{{"ABC"[rng.IntN(3)]}}
			if rng.IntN(5) > 0 {
				dgs[0] = append(dgs[0], "mwn"[rng.IntN(3)])
			}
			if rng.IntN(3) > 0 {
				dgs = append(dgs, []byte(names[rng.IntN(len(names))]+";"+strings.Join(pick(alpns), ",")))
			}
			final := rng.IntN(2) == 0
			gr, gm := tbl.Decide(dgs, final)
			wr, wm := linearDecide(tbl, dgs, final)
			if gr != wr || gm != wm {
				t.Fatalf("round %d: %q final %t: Decide %v %t, linear %v %t", round, dgs, final, gr, gm, wr, wm)
			}
		}
	}
}

// TestDecideRanksAsTCP: UDP routes rank by identify's rule: an SNI route
// (specificity 2) before an ALPN route (1) of the same priority, whatever
// their order; the number of condition keys does not count.
func TestDecideRanksAsTCP(t *testing.T) {
	md := func([][]byte) (protocols.Metadata, bool) {
		return protocols.Metadata{SNI: "a.example", ALPN: []string{"h3"}}, true
	}
	tbl := NewTable([]Route{
		{Name: "alpn", Detect: dgA, Inspect: md, Conditions: protocols.Conditions{ALPN: []string{"h3"}}, Targets: []string{"x:1"}},
		{Name: "sni", Detect: dgA, Inspect: md, Conditions: protocols.Conditions{SNI: []string{"a.example"}}, Targets: []string{"x:1"}},
	}, metrics.New().UDP)
	if r, _ := tbl.Decide([][]byte{[]byte("Am")}, false); r == nil || r.Name != "sni" {
		t.Fatalf("got %v, want the SNI route", r)
	}
	if identify.CompareRank(tbl.routes[1].rankKey(), tbl.routes[0].rankKey()) >= 0 {
		t.Fatal("the SNI route does not rank first")
	}
}

// BenchmarkDecideQUIC: a flow's first datagrams decided among routes of
// one protocol by SNI, the winner last in file order.
func BenchmarkDecideSNI(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprint("routes=", n), func(b *testing.B) {
			var routes []Route
			for i := range n {
				routes = append(routes, Route{Name: "r", Detect: dgA, Inspect: dgInspect, Conditions: protocols.Conditions{SNI: []string{fmt.Sprintf("n%d.example", i)}}, Targets: []string{"x:1"}})
			}
			tbl := NewTable(routes, metrics.New().UDP)
			dgs := [][]byte{[]byte("Am"), []byte(fmt.Sprintf("n%d.example;h3", n-1))}
			if r, _ := tbl.Decide(dgs, false); r != &routes[n-1] {
				b.Fatal("not routed to the last route")
			}
			for b.Loop() {
				tbl.Decide(dgs, false)
			}
		})
	}
}

// BenchmarkDecideQUIC: a recorded QUIC Initial (gnutls client) decided
// among QUIC routes by SNI, the winner last in file order: the Initial is
// decrypted once per Decide whatever the number of routes.
func BenchmarkDecideQUIC(b *testing.B) {
	var dg []byte
	for _, d := range testnet.Datagrams(b, "quic-gtlsclient") {
		dg = d
	}
	dgs := [][]byte{dg}
	quic, _ := protocols.Lookup("quic")
	spec := quic("x:1").Spec()
	md, ok := spec.InspectDatagram(dgs)
	if !ok || md.SNI == "" {
		b.Fatalf("recorded Initial: no SNI (%+v, %t)", md, ok)
	}
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprint("routes=", n), func(b *testing.B) {
			var routes []Route
			for i := range n {
				name := fmt.Sprintf("n%d.example", i)
				if i == n-1 {
					name = md.SNI
				}
				routes = append(routes, Route{Name: "QUIC", Detect: spec.Datagram, Inspect: spec.InspectDatagram, Conditions: protocols.Conditions{SNI: []string{name}}, Targets: []string{"x:1"}})
			}
			tbl := NewTable(routes, metrics.New().UDP)
			if r, _ := tbl.Decide(dgs, false); r != &routes[n-1] {
				b.Fatalf("routed to %v, not the last route", r)
			}
			b.ReportAllocs()
			for b.Loop() {
				tbl.Decide(dgs, false)
			}
		})
	}
}

// TestDecideInspectsOnce: 1,000 routes of one datagram protocol by name:
// one Decide runs the detector and the inspector (for QUIC: the Initial's
// decryption) once, whatever the number of routes.
func TestDecideInspectsOnce(t *testing.T) {
	var detects, inspects int
	detect := func(dgs [][]byte) protocols.Result { detects++; return dgA(dgs) }
	inspect := func(dgs [][]byte) (protocols.Metadata, bool) { inspects++; return dgInspect(dgs) }
	var routes []Route
	for i := range 1000 {
		routes = append(routes, Route{Name: "A", Detect: detect, Inspect: inspect, Targets: []string{"x:1"},
			Conditions: protocols.Conditions{SNI: []string{fmt.Sprintf("n%d.example", i)}}})
	}
	tbl := NewTable(routes, metrics.New().UDP)
	if r, more := tbl.Decide([][]byte{[]byte("Am"), []byte("n999.example;h3")}, false); r != &routes[999] || more {
		t.Fatalf("got %v, more %t; want the last route", r, more)
	}
	if detects != 1 || inspects != 1 {
		t.Errorf("%d detector and %d inspector runs, want 1 each", detects, inspects)
	}
}
