package upstream

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestPlanSkipsHeldTargets: a target held in drain or maint is never
// offered by a plan, in either pass and under every strategy, whatever its
// health; releasing it (ready) brings it back. Status reports the hold and
// when it changed.
func TestPlanSkipsHeldTargets(t *testing.T) {
	targets := []Target{{Addr: "10.0.0.1:1", Weight: 1}, {Addr: "10.0.0.2:1", Weight: 2}, {Addr: "10.0.0.3:1", Weight: 1}}
	for _, strategy := range []string{RoundRobin, WeightedRoundRobin, LeastConnections, Random, First} {
		t.Run(strategy, func(t *testing.T) {
			s, err := New(targets, Options{Strategy: strategy})
			if err != nil {
				t.Fatal(err)
			}
			clock := newFakeClock(s)
			offered := func() string {
				p := s.Plan()
				var got []string
				for {
					a, ok := p.Next()
					if !ok {
						return strings.Join(got, " ")
					}
					got = append(got, a.Target)
				}
			}
			clock.advance(time.Second)
			if !s.SetAdmin("10.0.0.2:1", Drain) || !s.SetAdmin("10.0.0.3:1", Maint) {
				t.Fatal("SetAdmin did not find a configured target")
			}
			if s.SetAdmin("10.0.0.9:1", Drain) {
				t.Fatal("SetAdmin found a target the set does not have")
			}
			for range 20 {
				if got := offered(); got != "10.0.0.1:1" {
					t.Fatalf("with two targets held, a plan offered %q", got)
				}
			}
			// The only free target in back-off: still offered (pass two), the held ones still not.
			p := s.Plan()
			a, _ := p.Next()
			p.Done(a, 0, fmt.Errorf("refused"))
			if got := offered(); got != "10.0.0.1:1" {
				t.Fatalf("with the free target down, a plan offered %q", got)
			}
			st := s.Status()
			if st[1].Admin != Drain || st[2].Admin != Maint || st[0].Admin != Ready {
				t.Fatalf("Status admin states: %v %v %v", st[0].Admin, st[1].Admin, st[2].Admin)
			}
			if !st[1].Since.Equal(time.Date(2030, 1, 1, 0, 0, 1, 0, time.UTC)) {
				t.Fatalf("Since of the drained target = %v", st[1].Since)
			}
			if st[0].DialErrors != 1 {
				t.Fatalf("DialErrors = %d, want 1", st[0].DialErrors)
			}
			s.SetAdmin("10.0.0.2:1", Ready)
			s.SetAdmin("10.0.0.3:1", Ready)
			if got := offered(); len(strings.Fields(got)) != 3 {
				t.Fatalf("after ready, a plan offered %q, want all three", got)
			}
		})
	}
}

func TestParseAdmin(t *testing.T) {
	for _, a := range []Admin{Ready, Drain, Maint} {
		if got, ok := ParseAdmin(a.String()); !ok || got != a {
			t.Errorf("ParseAdmin(%q) = %v, %v", a.String(), got, ok)
		}
	}
	if _, ok := ParseAdmin("down"); ok {
		t.Error("ParseAdmin accepted down")
	}
}

// TestStatusSince: a target's state changes at a failed dial (down), when
// its back-off runs out (up again), and at a successful dial after
// failures; Since follows each.
func TestStatusSince(t *testing.T) {
	s, err := New([]Target{{Addr: "10.0.0.1:1", Weight: 1}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	clock := newFakeClock(s)
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC) // the fake clock's start
	clock.advance(5 * time.Second)
	p := s.Plan()
	a, _ := p.Next()
	p.Done(a, 0, fmt.Errorf("refused"))
	st := s.Status()[0]
	if st.Up || !st.Since.Equal(t0.Add(5*time.Second)) {
		t.Fatalf("after a failed dial: up %v since %v", st.Up, st.Since)
	}
	clock.advance(3 * time.Second) // the 1 s back-off ran out 2 s ago
	if st := s.Status()[0]; !st.Up || !st.Since.Equal(t0.Add(6*time.Second)) {
		t.Fatalf("after the back-off: up %v since %v", st.Up, st.Since)
	}
}
