package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/proxyproto"
	"github.com/darkit/protoplex/internal/testnet"
)

// TestDialOrderPinned pins the targets Set.Dial attempts, in order, for
// each deterministic strategy over live and refused targets of different
// weights, with the clock moving so that back-offs start and expire
// between dials. Each dial is written as its attempts, "x" marking a
// failure; every third connection stays open (least_connections counts it).
func TestDialOrderPinned(t *testing.T) {
	l1, l2 := newCounting(t).ln.Addr().String(), newCounting(t).ln.Addr().String()
	const d1, d2, d3 = refused, "127.0.0.1:2", "127.0.0.1:3"
	name := map[string]string{l1: "L1", l2: "L2", d1: "D1", d2: "D2", d3: "D3"}
	mixed := []Target{{Addr: d1, Weight: 1}, {Addr: l1, Weight: 1}, {Addr: d2, Weight: 2}, {Addr: l2, Weight: 3}}
	dead := []Target{{Addr: d1, Weight: 1}, {Addr: d2, Weight: 2}, {Addr: d3, Weight: 1}}
	want := map[string]string{
		"mixed/round_robin":          "D1x L1 | L1 | D2x L1 | L2 | D1x L1 | L1 | D2x L1 | L2 | D1x L1 | L1 | D2x L1 | L2 | L1 | L1 | D1x L1 | L2",
		"mixed/weighted_round_robin": "L2 | D2x D1x L1 | L1 | L2 | D1x L1 | L2 | D2x L1 | L1 | L2 | L2 | D2x D1x L1 | L2 | L1 | L2 | L2 | L2",
		"mixed/least_connections":    "D1x L1 | D2x L1 | L2 | D1x L1 | D2x L1 | D1x L1 | L2 | D2x L1 | L2 | L2 | D1x L1 | L1 | D2x L1 | L2 | L2 | L2",
		"mixed/first":                "D1x L1 | L1 | L1 | D1x L1 | L1 | D1x L1 | L1 | L1 | L1 | L1 | D1x L1 | L1 | L1 | L1 | L1 | L1",
		"dead/round_robin":           "D1x D2x D3x | D2x D1x D3x | D3x D1x D2x | D1x D2x D3x | D2x D1x D3x | D3x D1x D2x | D1x D2x D3x | D2x D1x D3x | D3x D1x D2x | D1x D2x D3x | D2x D1x D3x | D3x D1x D2x | D1x D2x D3x | D2x D1x D3x | D3x D1x D2x | D1x D2x D3x",
		"dead/weighted_round_robin":  "D2x D1x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x",
		"dead/least_connections":     "D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x",
		"dead/first":                 "D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x | D1x D2x D3x",
	}
	for _, tc := range []struct {
		set     string
		targets []Target
	}{{"mixed", mixed}, {"dead", dead}} {
		for _, strategy := range []string{RoundRobin, WeightedRoundRobin, LeastConnections, First} {
			targets := tc.targets
			t.Run(tc.set+"/"+strategy, func(t *testing.T) {
				var attempts []string
				s, err := New(targets, Options{Strategy: strategy, DialDone: func(target string, _ time.Duration, err error) {
					a := name[target]
					if err != nil {
						a += "x"
					}
					attempts = append(attempts, a)
				}})
				if err != nil {
					t.Fatal(err)
				}
				clock := newFakeClock(s)
				var dials []string
				for i := range 16 {
					attempts = attempts[:0]
					c, _, done, err := s.Dial(context.Background(), nil, nil)
					if err == nil {
						defer c.Close()
						if i%3 != 0 {
							done()
						}
					}
					dials = append(dials, strings.Join(attempts, " "))
					clock.advance(time.Duration(i%5) * 400 * time.Millisecond)
				}
				got := strings.Join(dials, " | ")
				if w, ok := want[tc.set+"/"+strategy]; ok && got != w {
					t.Errorf("attempts\n got %s\nwant %s", got, w)
				}
			})
		}
	}
}

// errRefused is a failed attempt's error in tests that never dial.
var errRefused = errors.New("refused")

// planStep is one client's plan in TestPlanOrder.
type planStep struct {
	advance time.Duration // the clock moves first
	fail    string        // the targets (letters) whose attempt fails
	hold    bool          // the connection stays open (active)
	want    string        // attempts in order, "x" marking a failure
}

// TestPlanOrder: per strategy, the targets a plan offers, in order: the
// strategy's choice first, targets in back-off only in a second pass, none
// twice, and back-offs of 1 s doubling as failures repeat. The attempts
// are never dialed: Done reports the outcome.
func TestPlanOrder(t *testing.T) {
	for _, tc := range []struct {
		name     string
		strategy string
		weights  []int
		steps    []planStep
	}{
		{"round robin", RoundRobin, []int{1, 1, 1}, []planStep{
			{want: "A"},
			{fail: "B", want: "Bx A"},
			{want: "C"},                       // B in back-off
			{fail: "A", want: "Ax C"},         // B still skipped in the first pass
			{fail: "ABC", want: "Cx Bx Ax"},   // the second pass: B and A, C not again
			{advance: time.Second, want: "C"}, // C's back-off (1 s) over, A's and B's (2 s) not
			{advance: time.Second, want: "A"},
		}},
		{"first", First, []int{1, 1, 1}, []planStep{
			{fail: "A", want: "Ax B"},
			{want: "B"},
			{fail: "B", want: "Bx C"},
			{fail: "C", want: "Cx A"}, // A, in back-off, tried last and up again
			{want: "A"},
		}},
		{"weighted round robin", WeightedRoundRobin, []int{5, 1, 1}, []planStep{
			{want: "A"},
			{fail: "A", want: "Ax B"},
			{want: "B"}, // over the targets that are up: B and C
			{want: "C"},
			{advance: time.Second, want: "B"},
			{want: "A"},
		}},
		{"least connections", LeastConnections, []int{1, 1, 1}, []planStep{
			{hold: true, want: "A"},
			{hold: true, want: "B"},
			{hold: true, fail: "C", want: "Cx A"},
			{hold: true, want: "B"},
			{want: "A"},
			{advance: time.Second, want: "C"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var targets []Target
			for i, w := range tc.weights {
				targets = append(targets, Target{Addr: fmt.Sprintf("192.0.2.%d:80", i+1), Weight: w})
			}
			var observed int
			s, err := New(targets, Options{Strategy: tc.strategy, DialDone: func(string, time.Duration, error) { observed++ }})
			if err != nil {
				t.Fatal(err)
			}
			clock := newFakeClock(s)
			attempts := 0
			for i, st := range tc.steps {
				clock.advance(st.advance)
				got, release := runPlan(s, st.fail)
				attempts += len(strings.Fields(got))
				if got != st.want {
					t.Fatalf("step %d: attempts %q, want %q", i+1, got, st.want)
				}
				if release != nil && !st.hold {
					release()
				}
			}
			if observed != attempts {
				t.Fatalf("DialDone saw %d attempts of %d", observed, attempts)
			}
		})
	}
}

// runPlan runs one plan of s, the targets named in fail (A the first)
// failing, and returns its attempts and the release of the one that
// succeeded.
func runPlan(s *Set, fail string) (string, func()) {
	var out []string
	p := s.Plan()
	for {
		a, ok := p.Next()
		if !ok {
			return strings.Join(out, " "), nil
		}
		name := string(rune('A' + slices.IndexFunc(s.targets, func(t *target) bool { return t.Addr == a.Target })))
		if strings.Contains(fail, name) {
			out = append(out, name+"x")
			p.Done(a, 0, errRefused)
			continue
		}
		out = append(out, name)
		return strings.Join(out, " "), p.Done(a, 0, nil)
	}
}

// TestPlanPasses: for every strategy and random up/down states, a plan
// offers each target exactly once, the ones up first.
func TestPlanPasses(t *testing.T) {
	for _, strategy := range []string{RoundRobin, WeightedRoundRobin, LeastConnections, Random, First} {
		for _, n := range []int{1, 2, 5, 64, 65, 130} {
			var targets []Target
			for i := range n {
				targets = append(targets, Target{Addr: fmt.Sprintf("192.0.2.%d:%d", i%250+1, 1000+i), Weight: 1 + i%3})
			}
			s, err := New(targets, Options{Strategy: strategy})
			if err != nil {
				t.Fatal(err)
			}
			newFakeClock(s)
			for round := range 20 {
				down := map[string]bool{}
				for _, tg := range s.targets {
					if rand.IntN(3) == 0 {
						down[tg.Addr] = true
						tg.downUntil.Store(s.now().Add(time.Second).UnixNano())
					} else {
						tg.downUntil.Store(0)
					}
				}
				p := s.Plan()
				seen := map[string]bool{}
				inBackoff := false
				for {
					a, ok := p.Next()
					if !ok {
						break
					}
					if seen[a.Target] {
						t.Fatalf("%s, %d targets, round %d: %s offered twice", strategy, n, round, a.Target)
					}
					seen[a.Target] = true
					if down[a.Target] {
						inBackoff = true
					} else if inBackoff {
						t.Fatalf("%s, %d targets, round %d: %s (up) offered after a target in back-off", strategy, n, round, a.Target)
					}
				}
				if len(seen) != n {
					t.Fatalf("%s, %d targets, round %d: %d targets offered", strategy, n, round, len(seen))
				}
			}
		}
	}
}

// TestPlanManyTargets: past 64 targets the up state still follows each
// target: the failed ones come last, in order.
func TestPlanManyTargets(t *testing.T) {
	var targets []Target
	for i := range 130 {
		targets = append(targets, Target{Addr: fmt.Sprintf("192.0.2.1:%d", 1000+i), Weight: 1})
	}
	s, err := New(targets, Options{Strategy: First})
	if err != nil {
		t.Fatal(err)
	}
	newFakeClock(s)
	failing := []int{3, 63, 64, 70, 127, 128, 129}
	for _, i := range failing {
		p := s.Plan()
		p.Done(Attempt{Target: s.targets[i].Addr, t: s.targets[i]}, 0, errRefused)
	}
	p := s.Plan()
	var order []int
	for {
		a, ok := p.Next()
		if !ok {
			break
		}
		order = append(order, slices.Index(targets, Target{Addr: a.Target, Weight: 1}))
	}
	if len(order) != 130 || !slices.Equal(order[130-len(failing):], failing) {
		t.Fatalf("order %v, want the failed targets %v last", order, failing)
	}
}

// TestAttemptKinds: an attempt the caller can connect itself carries the
// address (an IP literal, no source, not transparent) or the Unix path;
// anything else needs Plan.Dial.
func TestAttemptKinds(t *testing.T) {
	src := []netip.Addr{netip.MustParseAddr("127.0.0.2")}
	for _, tc := range []struct {
		target    string
		opt       Options
		addr      string // want Addr, "" for none
		unix      string
		needsDial bool
	}{
		{target: "127.0.0.1:80", addr: "127.0.0.1:80"},
		{target: "[::1]:443", addr: "[::1]:443"},
		{target: "[::ffff:127.0.0.1]:80", addr: "127.0.0.1:80"},
		{target: "[fe80::1%lo]:80", needsDial: true},
		{target: "localhost:80", needsDial: true},
		{target: "127.0.0.1:80", opt: Options{Source: src}, needsDial: true},
		{target: "127.0.0.1:80", opt: Options{Transparent: true}, needsDial: true},
		{target: "unix:/run/app.sock", unix: "/run/app.sock"},
	} {
		s, err := New([]Target{{Addr: tc.target, Weight: 1}}, tc.opt)
		if errors.Is(err, ErrTransparentUnsupported) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		p := s.Plan()
		a, ok := p.Next()
		if !ok || a.Target != tc.target || a.Pooled != nil {
			t.Fatalf("%s: attempt %+v, %v", tc.target, a, ok)
		}
		if got := a.Addr.String(); (tc.addr == "" && a.Addr.IsValid()) || (tc.addr != "" && got != tc.addr) {
			t.Errorf("%s %+v: Addr %s, want %q", tc.target, tc.opt, got, tc.addr)
		}
		if a.Unix != tc.unix {
			t.Errorf("%s: Unix %q, want %q", tc.target, a.Unix, tc.unix)
		}
		if needs := !a.Addr.IsValid() && a.Unix == ""; needs != tc.needsDial {
			t.Errorf("%s %+v: needs the blocking dial %v, want %v", tc.target, tc.opt, needs, tc.needsDial)
		}
		if _, ok := p.Next(); ok {
			t.Fatalf("%s: a second attempt on a one-target set", tc.target)
		}
	}
}

// TestPlanPooled: a target with a warm connection offers it; Done counts
// it reused (not created) and active until released, and Plan.Dial hands
// it back as is.
func TestPlanPooled(t *testing.T) {
	b := newCounting(t)
	s, _ := New([]Target{{Addr: b.ln.Addr().String(), Weight: 1}}, Options{Pool: Pool{MinIdle: 2, MaxIdleTime: time.Minute}})
	s.Start(context.Background())
	defer s.Close()
	testnet.Eventually(t, 10*time.Second, func() bool { return s.Idle() >= 2 }, "pool not filled")
	p := s.Plan()
	a, ok := p.Next()
	if !ok || a.Pooled == nil || a.Addr.IsValid() || a.Unix != "" {
		t.Fatalf("attempt %+v, %v: want a pooled connection only", a, ok)
	}
	defer a.Pooled.Close()
	if c, err := p.Dial(context.Background(), a, nil); c != a.Pooled || err != nil {
		t.Fatalf("Dial of a pooled attempt: %v, %v", c, err)
	}
	created := s.Created()
	release := p.Done(a, 0, nil)
	if s.Reused() != 1 || s.Status()[0].Active != 1 {
		t.Fatalf("reused %d, active %d", s.Reused(), s.Status()[0].Active)
	}
	release()
	if s.Status()[0].Active != 0 {
		t.Fatalf("active %d after release", s.Status()[0].Active)
	}
	// The pool's refills count as created, the reused connection does not.
	if grown := s.Created() - created; grown < 0 || grown > 1 {
		t.Fatalf("created grew by %d", grown)
	}
}

// TestPlanDoneCounts: a dialed success counts created and active; a
// failure counts nothing but puts the target in back-off.
func TestPlanDoneCounts(t *testing.T) {
	s, _ := New([]Target{{Addr: "192.0.2.1:80", Weight: 1}}, Options{})
	newFakeClock(s)
	p := s.Plan()
	a, _ := p.Next()
	if release := p.Done(a, 0, errRefused); release != nil || s.Status()[0].Up || s.Created() != 0 {
		t.Fatalf("failure: release %v, status %+v, created %d", release != nil, s.Status()[0], s.Created())
	}
	p = s.Plan()
	a, _ = p.Next()
	release := p.Done(a, 0, nil)
	if st := s.Status()[0]; !st.Up || st.Active != 1 || s.Created() != 1 || s.Reused() != 0 {
		t.Fatalf("success: status %+v, created %d, reused %d", st, s.Created(), s.Reused())
	}
	release()
	if s.Status()[0].Active != 0 {
		t.Fatal("release did not end the connection")
	}
}

// TestPlanAllocs: a plan, its attempts and the release of its connection
// allocate nothing on a set of up to 64 targets.
func TestPlanAllocs(t *testing.T) {
	for _, strategy := range []string{RoundRobin, WeightedRoundRobin, LeastConnections, Random, First} {
		var targets []Target
		for i := range 64 {
			targets = append(targets, Target{Addr: fmt.Sprintf("192.0.2.1:%d", 1000+i), Weight: 1})
		}
		s, _ := New(targets, Options{Strategy: strategy})
		newFakeClock(s)
		if n := testing.AllocsPerRun(100, func() {
			p := s.Plan()
			a, _ := p.Next()
			p.Done(a, 0, errRefused)
			a, _ = p.Next()
			p.Done(a, 0, nil)()
			for _, t := range s.targets {
				t.downUntil.Store(0)
			}
		}); n != 0 {
			t.Errorf("%s: %.1f allocations per plan", strategy, n)
		}
	}
}

// TestPlanZero: the zero Plan offers nothing.
func TestPlanZero(t *testing.T) {
	var p Plan
	if a, ok := p.Next(); ok {
		t.Fatalf("zero plan offered %+v", a)
	}
}

// TestProxyHeader: the header is the one the set's version writes, nil
// without send_proxy.
func TestProxyHeader(t *testing.T) {
	client, local := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 4000}, &net.TCPAddr{IP: net.IPv4(198, 51, 100, 2), Port: 443}
	h := proxyproto.Header{Source: netip.MustParseAddrPort("192.0.2.1:4000"), Dest: netip.MustParseAddrPort("198.51.100.2:443")}
	for _, tc := range []struct {
		version string
		want    []byte
	}{
		{"", nil},
		{"v1", proxyproto.AppendV1(nil, h)},
		{"v2", proxyproto.AppendV2(nil, h)},
	} {
		s, err := New([]Target{{Addr: "192.0.2.9:80", Weight: 1}}, Options{SendProxy: tc.version})
		if err != nil {
			t.Fatal(err)
		}
		if got := s.ProxyHeader(client, local); !bytes.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
			t.Errorf("%q: header %q, want %q", tc.version, got, tc.want)
		}
	}
}

// TestAdopt: a connection another process dialed counts as active on its
// target until released; a target the set does not have gives no release.
func TestAdopt(t *testing.T) {
	s, err := New([]Target{{Addr: "192.0.2.1:22", Weight: 1}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	release := s.Adopt("192.0.2.1:22")
	if release == nil || s.Status()[0].Active != 1 {
		t.Fatalf("release %v, active %d", release != nil, s.Status()[0].Active)
	}
	release()
	if s.Status()[0].Active != 0 {
		t.Fatalf("active %d after release", s.Status()[0].Active)
	}
	if s.Adopt("192.0.2.9:22") != nil {
		t.Error("a release for a target the set does not have")
	}
}

// TestDatagramPlan: a UDP flow's plan follows the strategy and the
// back-off as a connection's does, skips unix: targets, gives the address
// of IP literals only, and never takes a warm-pool (stream) connection.
func TestDatagramPlan(t *testing.T) {
	s, err := New([]Target{{Addr: "unix:/run/x.sock", Weight: 1}, {Addr: "127.0.0.1:53", Weight: 1}, {Addr: "localhost:53", Weight: 1}}, Options{Strategy: First})
	if err != nil {
		t.Fatal(err)
	}
	s.targets[1].pool = make(chan pooled, 1)
	c1, c2 := net.Pipe()
	defer c2.Close()
	s.targets[1].pool <- pooled{c: c1, at: time.Now()}
	clock := newFakeClock(s)
	order := func() (out []string) {
		p := s.DatagramPlan()
		for a, ok := p.Next(); ok; a, ok = p.Next() {
			if a.Pooled != nil || a.Unix != "" {
				t.Fatalf("attempt %+v: a stream attempt in a datagram plan", a)
			}
			if a.Addr.IsValid() != (a.Target == "127.0.0.1:53") {
				t.Fatalf("attempt %+v: Addr set for %s", a, a.Target)
			}
			out = append(out, a.Target)
			if a.Target == "127.0.0.1:53" {
				p.Done(a, 0, errors.New("down"))
			}
		}
		return out
	}
	if got := strings.Join(order(), " "); got != "127.0.0.1:53 localhost:53" {
		t.Fatalf("first plan: %s", got)
	}
	// 127.0.0.1:53 failed: in back-off it comes after the host name.
	if got := strings.Join(order(), " "); got != "localhost:53 127.0.0.1:53" {
		t.Fatalf("plan in back-off: %s", got)
	}
	clock.advance(time.Minute) // the back-off is over
	if got := strings.Join(order(), " "); got != "127.0.0.1:53 localhost:53" {
		t.Fatalf("plan after the back-off: %s", got)
	}
	if len(s.targets[1].pool) != 1 {
		t.Fatal("a datagram plan took the pooled connection")
	}
}
