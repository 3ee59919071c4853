package metrics

import (
	"encoding/json"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestRates: rates over a window come from the samples at its two ends; a
// counter that went backwards counts from zero; with fewer samples than the
// window, the oldest kept sample is the start; with one sample, nothing.
func TestRates(t *testing.T) {
	var r Rates
	t0 := time.Unix(1000, 0)
	if r.Rate("a", 0, 10*time.Second) != 0 {
		t.Fatal("rate with no sample")
	}
	for i := range 100 {
		r.Add(t0.Add(time.Duration(i)*time.Second), map[string][]int64{"a": {int64(10 * i), int64(i * i)}})
	}
	if got := r.Rate("a", 0, 10*time.Second); got != 10 {
		t.Fatalf("rate over 10 s = %v, want 10", got)
	}
	if d, dt := r.Delta("a", 1, time.Minute); dt != time.Minute || d != 99*99-39*39 {
		t.Fatalf("delta over 1 min = %d over %v", d, dt)
	}
	if d, dt := r.Delta("a", 0, time.Hour); dt != 60*time.Second || d != 600 {
		t.Fatalf("a window longer than kept: delta %d over %v, want 600 over 60s", d, dt)
	}
	r.Add(t0.Add(100*time.Second), map[string][]int64{"a": {5}})
	if d, _ := r.Delta("a", 0, time.Second); d != 5 {
		t.Fatalf("a counter reset: delta %d, want 5", d)
	}
	if r.Rate("missing", 0, time.Minute) != 0 {
		t.Fatal("rate of an unknown key")
	}
}

// TestTargetFieldsAreTheJSON: the field table that drives the page and the
// CSV names exactly the JSON keys of a target, in the struct's order.
func TestTargetFieldsAreTheJSON(t *testing.T) {
	b, _ := json.Marshal(TargetState{})
	var m map[string]any
	json.Unmarshal(b, &m)
	var keys, names []string
	for k := range m {
		keys = append(keys, k)
	}
	for _, f := range TargetFields {
		names = append(names, f.Name)
		if f.Get(&TargetState{}) == nil {
			t.Errorf("field %s reads nothing", f.Name)
		}
	}
	slices.Sort(keys)
	sorted := slices.Sorted(slices.Values(names))
	if !slices.Equal(keys, sorted) {
		t.Fatalf("TargetFields %v\n  JSON keys %v", sorted, keys)
	}
}

// TestReadUDPAndProcess: the status reads the UDP counters by protocol and
// the process figures from the collectors behind /metrics.
func TestReadUDPAndProcess(t *testing.T) {
	s := New()
	dns := s.UDP.Route("DNS")
	dns.Flows.Add(3)
	dns.BytesUp.Add(100)
	dns.BytesDown.Add(250)
	quic := s.UDP.Route("QUIC")
	quic.Flows.Inc()
	keep(t, dns, quic)
	s.UDP.Active.Set(2)
	var u UDPState
	s.ReadUDP(&u)
	slices.SortFunc(u.Protocols, func(a, b UDPCount) int { return strings.Compare(a.Protocol, b.Protocol) })
	want := []UDPCount{{"DNS", 3, 100, 250}, {"QUIC", 1, 0, 0}}
	if u.FlowsActive != 2 || !slices.Equal(u.Protocols, want) {
		t.Fatalf("ReadUDP = %+v, want 2 active and %+v", u, want)
	}
	var tot Totals
	s.ReadProcess(&tot)
	if runtime.GOOS == "linux" && (tot.FDsOpen == 0 || tot.FDsLimit == 0 || tot.MemoryBytes == 0) {
		t.Fatalf("ReadProcess = %+v", tot)
	}
}
