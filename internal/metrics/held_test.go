package metrics

import (
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// labelled returns the series of s whose labels contain sub, with values.
func labelled(t *testing.T, s *Stats, sub string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for k, v := range series(t, s) {
		if strings.Contains(k, sub) {
			out[k] = v
		}
	}
	return out
}

// collected waits, collecting garbage, until s has no series whose labels
// contain sub and holds nothing under that name.
func collected(t *testing.T, s *Stats, sub string) {
	t.Helper()
	testnet.Eventually(t, 20*time.Second, func() bool {
		runtime.GC()
		return len(labelled(t, s, sub)) == 0
	}, "series of %q left once nothing held them", sub)
}

// holders makes, for route "gone" of protocol P, what a snapshot and a
// connection hold: its Route, a backend set's dial observer that saw a
// target fail, and the UDP counters of protocol GONE.
func holders(s *Stats) (*Route, func(string, time.Duration, error), *UDPRoute) {
	r := s.Route("P", "gone")
	r.Identify(time.Millisecond)
	r.Up.Add(3)
	dial := s.DialObserver("P", "gone")
	dial("t:1", time.Millisecond, errors.New("refused"))
	u := s.UDP.Route("GONE")
	u.Flows.Inc()
	return r, dial, u
}

// TestDrainingRouteKeepsCounting: a route no snapshot has any more, but a
// connection (or flow, or backend set) still holds, keeps its series
// through garbage collections, and what the connection counts at its end
// is scraped.
func TestDrainingRouteKeepsCounting(t *testing.T) {
	s := New()
	r, dial, u := holders(s)
	for range 3 {
		runtime.GC()
	}
	r.Up.Add(2) // the draining connection ends
	r.Closed[0].Inc()
	dial("t:1", time.Millisecond, errors.New("refused"))
	u.BytesUp.Add(7)
	m := series(t, s)
	for k, want := range map[string]float64{
		"protoplex_forwarded_bytes_total{direction=client_to_backend,protocol=P,route=gone}": 5,
		"protoplex_connections_closed_total{protocol=P,reason=done,route=gone}":              1,
		"protoplex_identified_total{protocol=P,route=gone}":                                  1,
		"protoplex_dial_errors_total{protocol=P,route=gone,target=t:1}":                      2,
		"protoplex_dial_duration_seconds{protocol=P,route=gone}_count":                       2,
		"protoplex_udp_flows_total{protocol=GONE}":                                           1,
		"protoplex_udp_bytes_total{direction=client_to_backend,protocol=GONE}":               7,
	} {
		if got, ok := m[k]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, want)
		}
	}
	if got := s.Identified()["P"]; got != 1 {
		t.Errorf("Identified()[P] = %d while the route is held, want 1", got)
	}
	runtime.KeepAlive(r)
	runtime.KeepAlive(dial)
	runtime.KeepAlive(u)
}

// TestReleasedRouteForgotten: once nothing holds a route's Route, dial
// observer and UDP counters (the snapshot replaced, the last connection
// ended), every series labelled with it is deleted, and nothing of it is
// kept: the registry is the size of what is live.
func TestReleasedRouteForgotten(t *testing.T) {
	s := New()
	before := len(series(t, s))
	for i := range 50 { // 50 reloads, each with a route of its own
		holders(s)
		if i == 0 && len(series(t, s)) == before {
			t.Fatal("holders made no series")
		}
	}
	collected(t, s, "gone")
	collected(t, s, "GONE")
	if n := len(series(t, s)); n != before {
		t.Errorf("%d series after the routes went, %d before", n, before)
	}
	testnet.Eventually(t, 20*time.Second, func() bool {
		runtime.GC()
		s.mu.Lock()
		n := len(s.routes)
		s.mu.Unlock()
		return n == 0 && s.holds.len() == 0
	}, "routes or holds left")
	if got := s.Identified(); len(got) != 0 {
		t.Errorf("Identified() = %v once the route went", got)
	}
}

// TestSharedSeriesOutliveOneHolder: a series two holders count into (a
// target of the old and the new backend set of a route across a reload,
// or a Route made again while the old one's series lived on) stays while
// one is held, and goes with the last.
func TestSharedSeriesOutliveOneHolder(t *testing.T) {
	s := New()
	key := "protoplex_dial_errors_total{protocol=P,route=kept,target=t:1}"
	observer := func() func(string, time.Duration, error) {
		d := s.DialObserver("P", "kept")
		d("t:1", time.Millisecond, errors.New("refused"))
		return d
	}
	observer() // the old set, gone
	next := observer()
	held := func() int {
		s.holds.mu.Lock()
		defer s.holds.mu.Unlock()
		return s.holds.n[heldKey{vec: s.dialErrors, labels: [3]string{"P", "kept", "t:1"}, n: 3}]
	}
	if n := held(); n != 1 && n != 2 {
		t.Fatalf("the target's series held %d times, want the two observers' (or the new one's)", n)
	}
	testnet.Eventually(t, 20*time.Second, func() bool { runtime.GC(); return held() == 1 }, "the old observer's hold not released")
	next("t:1", time.Millisecond, errors.New("refused"))
	if got := series(t, s)[key]; got != 3 {
		t.Fatalf("%s = %v with the new set held, want 3", key, got)
	}
	runtime.KeepAlive(next)

	// A Route collected while its series live on (another holder, here a
	// second registration of the same vector entry) goes on from its count.
	func() {
		r := s.Route("P", "again")
		r.Identify(time.Millisecond)
		r.Identify(time.Millisecond)
	}()
	testnet.Eventually(t, 20*time.Second, func() bool {
		runtime.GC()
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.routes) == 0
	}, "the first Route not collected")
	r := s.Route("P", "again")
	r.Identify(time.Millisecond)
	if got := r.Count(); got != 1 && got != 3 {
		t.Fatalf("Count() = %d: neither a fresh series (1) nor continued (3)", got)
	}
	if got, want := series(t, s)["protoplex_identified_total{protocol=P,route=again}"], float64(r.Count()); got != want {
		t.Fatalf("identified_total %v, Count() %v: they disagree", got, want)
	}
	runtime.KeepAlive(r)
}

// TestDiscoveredForgetsProtocols: a protocol etcd no longer lists loses its
// protoplex_discovered_backends series, so service names coming and going
// leave none behind.
func TestDiscoveredForgetsProtocols(t *testing.T) {
	s := New()
	for i := range 100 {
		s.Discovered(map[string]int{"kept": i, "churn" + string(rune('a'+i%26)) + string(rune('a'+i/26)): 1})
	}
	m := labelled(t, s, "protoplex_discovered_backends")
	if len(m) != 2 || m["protoplex_discovered_backends{protocol=kept}"] != 99 || m["protoplex_discovered_backends{protocol=churnvd}"] != 1 {
		t.Fatalf("after 100 updates: %v, want kept=99 and the last churn protocol only", m)
	}
	s.Discovered(nil)
	if m := labelled(t, s, "protoplex_discovered_backends"); len(m) != 0 {
		t.Fatalf("with nothing discovered: %v", m)
	}
}
