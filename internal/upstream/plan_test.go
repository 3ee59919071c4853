package upstream

import (
	"context"
	"strings"
	"testing"
	"time"
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
