package metrics

import (
	"bufio"
	"errors"
	"math"
	"net/http/httptest"
	"os"
	"regexp"
	"runtime"
	rtmetrics "runtime/metrics"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/darkit/protoplex/internal/bufpool"
	"github.com/darkit/protoplex/internal/identify"
	"github.com/darkit/protoplex/internal/proxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// keep holds objs (Routes, dial observers, UDPRoutes: what a snapshot or
// a connection would hold) until the test ends: their series go once they
// are collected.
func keep(t *testing.T, objs ...any) {
	t.Cleanup(func() { runtime.KeepAlive(objs) })
}

// series gathers s's registry as "name{label=value,...}" → value, labels
// sorted by name; a histogram as its _count.
func series(t *testing.T, s *Stats) map[string]float64 {
	t.Helper()
	mfs, err := s.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			if len(m.GetLabel()) > 0 {
				var ls []string
				for _, l := range m.GetLabel() {
					ls = append(ls, l.GetName()+"="+l.GetValue())
				}
				key += "{" + strings.Join(ls, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				out[key+"_count"] = float64(m.GetHistogram().GetSampleCount())
			default:
				out[key] = math.NaN()
			}
		}
	}
	return out
}

// populated returns Stats with one route "P" with a target up and one
// that failed a dial, the scrape-time state registered, and one protocol
// discovered: every documented metric then has a series.
func populated(t *testing.T) *Stats {
	t.Helper()
	s := New()
	if err := s.RegisterState(func() bool { return true }, func() int64 { return 7 }, func() int64 { return 3 }); err != nil {
		t.Fatal(err)
	}
	r := s.Route("P", "P[sni=a]")
	r.Identify(time.Millisecond)
	s.Checked("P", "P[sni=a]", []string{"a:1", "b:2"})
	dial := s.DialObserver("P", "P[sni=a]")
	dial("a:1", time.Millisecond, nil)
	dial("b:2", time.Millisecond, errors.New("refused"))
	s.StateObserver("P", "P[sni=a]")("b:2", false)
	s.Discovered(map[string]int{"P": 2})
	keep(t, r, dial, s.UDP.Route("P"))
	if err := s.RegisterCluster(func() float64 { return 1 }); err != nil {
		t.Fatal(err)
	}
	return s
}

// docMetrics reads the "Metric names" table of docs/ARCHITECTURE.md: each
// documented name with its label names and the label values the row lists.
func docMetrics(t *testing.T) map[string]docRow {
	t.Helper()
	f, err := os.Open("../../docs/ARCHITECTURE.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		in   bool
		rows = map[string]docRow{}
		name = regexp.MustCompile("`(protoplex_[a-z_]+)`")
		tick = regexp.MustCompile("`([a-z_]+)`")
		word = regexp.MustCompile(`^[a-z_]+$`)
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			in = strings.HasPrefix(line, "## Metric names")
			continue
		}
		if !in || !strings.HasPrefix(line, "| `protoplex_") {
			continue
		}
		cols := strings.Split(line, "|") // "", name, type, labels, ""
		if len(cols) < 5 {
			t.Fatalf("metric table row %q: want 3 columns", line)
		}
		var r docRow
		r.typ = strings.TrimSpace(cols[2])
		labels := cols[3]
		if i := strings.Index(labels, "("); i >= 0 {
			// Pieces that are one word are label values; the others explain.
			for _, v := range strings.Split(strings.Trim(labels[i:], " ()"), ",") {
				if v = strings.TrimSpace(v); word.MatchString(v) {
					r.values = append(r.values, v)
				}
			}
			labels = labels[:i]
		}
		for _, m := range tick.FindAllStringSubmatch(labels, -1) {
			r.labels = append(r.labels, m[1])
		}
		sort.Strings(r.labels)
		for _, m := range name.FindAllStringSubmatch(cols[1], -1) {
			rows[m[1]] = r
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 {
		t.Fatal(`docs/ARCHITECTURE.md: no "## Metric names" table of protoplex_ metrics`)
	}
	return rows
}

type docRow struct {
	typ    string
	labels []string // label names, sorted
	values []string // label values the row lists
}

// TestDocumentedMetrics: the registry exports exactly the protoplex_
// metrics docs/ARCHITECTURE.md lists, each with its type and label names,
// the label values it lists, and the Go runtime collector.
func TestDocumentedMetrics(t *testing.T) {
	doc := docMetrics(t)
	mfs, err := populated(t).Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	types := map[dto.MetricType]string{dto.MetricType_COUNTER: "counter", dto.MetricType_GAUGE: "gauge", dto.MetricType_HISTOGRAM: "histogram"}
	seen := map[string]bool{}
	for _, mf := range mfs {
		n := mf.GetName()
		if n == "go_goroutines" {
			seen[n] = true
		}
		if !strings.HasPrefix(n, "protoplex_") {
			continue
		}
		seen[n] = true
		row, ok := doc[n]
		if !ok {
			t.Errorf("%s is exported but not documented", n)
			continue
		}
		if got := types[mf.GetType()]; got != row.typ {
			t.Errorf("%s: type %s, documented %s", n, got, row.typ)
		}
		if mf.GetHelp() == "" {
			t.Errorf("%s: no help text", n)
		}
		values := map[string]bool{}
		for _, m := range mf.GetMetric() {
			var names []string
			for _, l := range m.GetLabel() {
				names = append(names, l.GetName())
				values[l.GetValue()] = true
			}
			sort.Strings(names)
			if !slices.Equal(names, row.labels) {
				t.Errorf("%s: labels %v, documented %v", n, names, row.labels)
			}
		}
		for _, v := range row.values {
			if !values[v] {
				t.Errorf("%s: documented label value %q has no series", n, v)
			}
		}
	}
	for n := range doc {
		if !seen[n] {
			t.Errorf("%s is documented but not exported", n)
		}
	}
	if !seen["go_goroutines"] {
		t.Error("no Go runtime collector (go_goroutines)")
	}
}

// TestLabelValuesAtZero: the label values of a bounded, known set exist
// at zero before anything is counted: refusal reasons, identification
// failures and reload results from New, a route's close reasons and byte
// directions from its Route, its checked targets' health from Checked.
func TestLabelValuesAtZero(t *testing.T) {
	s := New()
	keep(t, s.Route("P", "P"))
	s.Checked("P", "P", []string{"10.0.0.1:22"})
	m := series(t, s)
	var want []string
	for _, r := range []string{"max_connections", "proxy_header", "blacklist", "rate_limit", "per_ip_limit", "ddos_ban", "guard_full"} {
		want = append(want, "protoplex_connections_refused_total{reason="+r+"}")
	}
	for _, r := range []string{"no_match", "timeout", "client_closed", "read_error", "buffer_full", "fragmented"} {
		want = append(want, "protoplex_identify_failures_total{reason="+r+"}")
	}
	for _, r := range []string{"success", "failure"} {
		want = append(want, "protoplex_config_reloads_total{result="+r+"}", "protoplex_upgrades_total{result="+r+"}")
	}
	for _, r := range []string{"done", "idle_timeout", "error", "drain", "dial_error"} {
		want = append(want, "protoplex_connections_closed_total{protocol=P,reason="+r+",route=P}")
	}
	for _, d := range []string{"client_to_backend", "backend_to_client"} {
		want = append(want, "protoplex_forwarded_bytes_total{direction="+d+",protocol=P,route=P}")
	}
	want = append(want, "protoplex_identified_total{protocol=P,route=P}", "protoplex_identify_duration_seconds{protocol=P,route=P}_count")
	for _, r := range []string{"no_match", "timeout", "blacklist", "rate_limit", "per_ip_limit", "ddos_ban", "guard_full", "per_source_limit", "pending_full", "dial_error", "evicted", "table_full"} {
		want = append(want, "protoplex_udp_refused_total{reason="+r+"}")
	}
	for _, r := range []string{"idle", "evicted", "answered"} {
		want = append(want, "protoplex_udp_flows_expired_total{reason="+r+"}")
	}
	for _, r := range []string{"stale_reply", "idle_socket", "unchecked_query", "send_failed", "upstream_send_failed"} {
		want = append(want, "protoplex_udp_dropped_total{reason="+r+"}")
	}
	want = append(want, "protoplex_udp_pooled_sockets")
	for _, k := range want {
		if v, ok := m[k]; !ok || v != 0 {
			t.Errorf("%s = %v (present %v), want 0", k, v, ok)
		}
	}
	if v, ok := m["protoplex_backend_up{protocol=P,route=P,target=10.0.0.1:22}"]; !ok || v != 1 {
		t.Errorf("backend_up of a checked target before its checks fail = %v (present %v), want 1", v, ok)
	}
}

// TestCounting: each method counts into its own series.
func TestCounting(t *testing.T) {
	s := New()
	if err := s.RegisterState(func() bool { return true }, func() int64 { return 7 }, func() int64 { return 3 }); err != nil {
		t.Fatal(err)
	}
	s.Accepted.Inc()
	s.Active.Inc()
	s.PipeFallbacks.Add(2)
	s.ClusterNodes.Set(3)
	s.Refuse(RefusedMaxConnections)
	s.Refuse("blacklist")
	s.Refuse("blacklist")
	s.Refuse("other")
	s.IdentifyFailed(identify.Timeout)
	s.IdentifyFailed(identify.Failure(200)) // a value New does not know: counted under its String
	s.Reload(true)
	s.Reload(false)
	s.Reload(false)
	s.Discovered(map[string]int{"P": 4})
	r := s.Route("P", "P")
	if s.Route("P", "P") != r {
		t.Fatal("Route returned another Route for the same route")
	}
	r.Identify(2 * time.Millisecond)
	r.Identify(time.Millisecond)
	q, pa := s.Route("Q", "Q"), s.Route("P", "P[sni=a]") // a second route of P
	keep(t, r, q, pa)
	q.Identify(time.Millisecond)
	pa.Identify(time.Millisecond)
	r.Up.Add(10)
	r.Down.Add(20)
	r.Closed[proxy.IdleTimeout].Inc()
	r.DialError.Inc()
	cache := identify.NewCache(time.Minute, 1024, &s.Cache)
	now := time.Now()
	cache.Get([]byte("x"), now) // a miss
	cache.Put([]byte("x"), identify.Verdict{Final: true}, now)
	cache.Get([]byte("x"), now) // a hit
	m := series(t, s)
	for k, want := range map[string]float64{
		"protoplex_connections_accepted_total":                                            1,
		"protoplex_connections_active":                                                    1,
		"protoplex_pipe_fallbacks_total":                                                  2,
		"protoplex_cluster_nodes":                                                         3,
		"protoplex_connections_refused_total{reason=max_connections}":                     1,
		"protoplex_connections_refused_total{reason=blacklist}":                           2,
		"protoplex_connections_refused_total{reason=other}":                               1,
		"protoplex_identify_failures_total{reason=timeout}":                               1,
		"protoplex_identify_failures_total{reason=unknown}":                               1,
		"protoplex_config_reloads_total{result=success}":                                  1,
		"protoplex_config_reloads_total{result=failure}":                                  2,
		"protoplex_discovered_backends{protocol=P}":                                       4,
		"protoplex_identified_total{protocol=P,route=P}":                                  2,
		"protoplex_identified_total{protocol=P,route=P[sni=a]}":                           1,
		"protoplex_identified_total{protocol=Q,route=Q}":                                  1,
		"protoplex_identify_duration_seconds{protocol=P,route=P}_count":                   2,
		"protoplex_forwarded_bytes_total{direction=client_to_backend,protocol=P,route=P}": 10,
		"protoplex_forwarded_bytes_total{direction=backend_to_client,protocol=P,route=P}": 20,
		"protoplex_connections_closed_total{protocol=P,reason=idle_timeout,route=P}":      1,
		"protoplex_connections_closed_total{protocol=P,reason=dial_error,route=P}":        1,
		"protoplex_connections_closed_total{protocol=P,reason=done,route=P}":              0,
		"protoplex_identify_cache_lookups_total":                                          2,
		"protoplex_identify_cache_hits_total":                                             1,
		"protoplex_draining":                                                              1,
		"protoplex_pool_connections_created_total":                                        7,
		"protoplex_pool_connections_reused_total":                                         3,
	} {
		if got, ok := m[k]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, want)
		}
	}
	if got := s.Identified(); len(got) != 2 || got["P"] != 3 || got["Q"] != 1 {
		t.Errorf("Identified() = %v", got)
	}
	if got := s.CacheHitRate(); got != 0.5 {
		t.Errorf("CacheHitRate() = %v, want 0.5", got)
	}
	if got := New().CacheHitRate(); got != 0 {
		t.Errorf("CacheHitRate() before any lookup = %v", got)
	}
}

// TestBackendHealth: backend_up is what the health checks say, and only
// that: a checked target is 1 until a check marks it down and follows the
// checks' transitions; a dial, failed or not, changes nothing, and a target
// no check watches has no series at all (its state is unknown). Dial
// failures and durations are counted.
func TestBackendHealth(t *testing.T) {
	s := New()
	s.Checked("P", "P", []string{"a:1"})
	up := func() float64 { return series(t, s)["protoplex_backend_up{protocol=P,route=P,target=a:1}"] }
	dial := s.DialObserver("P", "P")
	dial("a:1", time.Millisecond, errors.New("refused"))
	if v := up(); v != 1 {
		t.Fatalf("after a failed dial: backend_up %v, want the checks' 1", v)
	}
	unchecked := s.DialObserver("P", "P[sni=b]")
	unchecked("b:1", time.Millisecond, errors.New("refused"))
	keep(t, dial, unchecked)
	for k := range series(t, s) {
		if strings.HasPrefix(k, "protoplex_backend_up{") && strings.Contains(k, "b:1") {
			t.Fatalf("a target no check watches has a backend_up series: %s", k)
		}
	}
	state := s.StateObserver("P", "P")
	state("a:1", false)
	if v := up(); v != 0 {
		t.Fatalf("after a check marked it down: backend_up %v", v)
	}
	state("a:1", true)
	if v := up(); v != 1 {
		t.Fatalf("after a check marked it up: backend_up %v", v)
	}
	m := series(t, s)
	if v := m["protoplex_dial_errors_total{protocol=P,route=P,target=a:1}"]; v != 1 {
		t.Errorf("dial errors %v, want 1", v)
	}
	if v := m["protoplex_dial_duration_seconds{protocol=P,route=P}_count"]; v != 1 {
		t.Errorf("dials observed %v, want 1", v)
	}
}

// TestRegistriesIndependent: two Stats in one process register and count
// apart, and the state collectors can be registered once per Stats.
func TestRegistriesIndependent(t *testing.T) {
	a, b := New(), New()
	a.Accepted.Inc()
	if v := series(t, b)["protoplex_connections_accepted_total"]; v != 0 {
		t.Fatalf("a second Stats counts the first's connections: %v", v)
	}
	state := func() error {
		return a.RegisterState(func() bool { return false }, func() int64 { return 0 }, func() int64 { return 0 })
	}
	if err := state(); err != nil {
		t.Fatal(err)
	}
	var already prometheus.AlreadyRegisteredError
	if err := state(); !errors.As(err, &already) {
		t.Fatalf("second RegisterState: %v, want AlreadyRegisteredError", err)
	}
	if err := b.RegisterState(func() bool { return false }, func() int64 { return 0 }, func() int64 { return 0 }); err != nil {
		t.Fatalf("RegisterState on a second Stats: %v", err)
	}
}

// TestHandler: the handler serves the registry in the exposition format.
func TestHandler(t *testing.T) {
	s := populated(t)
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	if rec.Code != 200 || !strings.Contains(body, "# HELP protoplex_connections_accepted_total Connections accepted.") ||
		!strings.Contains(body, `protoplex_backend_up{protocol="P",route="P[sni=a]",target="b:2"} 0`) {
		t.Fatalf("%d\n%s", rec.Code, body)
	}
}

// TestReadBuffers: the tiers, smallest first, fill the identity, small,
// medium and large pool figures, and the bytes handed out the current
// allocation.
func TestReadBuffers(t *testing.T) {
	p := bufpool.New()
	sz := bufpool.Sizes()
	var held []*[]byte
	for i := range bufpool.Tiers {
		for range i + 1 {
			held = append(held, p.Get(sz[i]))
		}
	}
	p.Put(held[0])
	var m DetailedMemoryPoolMetrics
	ReadBuffers(&m, p)
	ps := m.PoolStats
	for i, got := range []PoolOperationStats{ps.IdentityPool, ps.SmallPool, ps.MediumPool, ps.LargePool} {
		want := PoolOperationStats{Gets: int64(i + 1), InUse: int64(i + 1), Misses: int64(i + 1)}
		if i == 0 {
			want.Puts, want.InUse = 1, 0
		}
		if got != want {
			t.Errorf("tier %d: %+v, want %+v", i, got, want)
		}
	}
	if want := int64(2*sz[1] + 3*sz[2] + 4*sz[3]); m.MemoryStats.CurrentAllocatedBytes != want {
		t.Errorf("current allocated %d, want %d", m.MemoryStats.CurrentAllocatedBytes, want)
	}
}

// TestReadRuntime: heap bytes and GC cycles come from runtime/metrics.
func TestReadRuntime(t *testing.T) {
	runtime.GC()
	var m DetailedMemoryPoolMetrics
	ReadRuntime(&m)
	if m.MemoryStats.RuntimeAllocBytes == 0 || m.GCStats.GCRuns == 0 {
		t.Fatalf("%+v", m)
	}
}

// TestHistogramMean: counts at bucket midpoints, open buckets bounded by
// their finite edge or 0.
func TestHistogramMean(t *testing.T) {
	for _, tc := range []struct {
		counts  []uint64
		buckets []float64
		want    uint64
	}{
		{[]uint64{0, 0}, []float64{0, 1e-6, 2e-6}, 0},
		{[]uint64{1, 1}, []float64{0, 1e-6, 3e-6}, 1250},                       // (0.5 µs + 2 µs) / 2
		{[]uint64{2}, []float64{math.Inf(-1), 4e-6}, 2000},                     // open below: from 0
		{[]uint64{0, 1}, []float64{0, 1e-6, math.Inf(1)}, 1000},                // open above: its lower bound
		{[]uint64{1, 0, 1}, []float64{0, 2e-6, 4e-6, 6e-6}, (1000 + 5000) / 2}, // empty buckets skipped
	} {
		h := &rtmetrics.Float64Histogram{Counts: tc.counts, Buckets: tc.buckets}
		// Within 1 ns: the mean is computed in float seconds and truncated.
		if got := histogramMeanNs(h); got+1 < tc.want || got > tc.want+1 {
			t.Errorf("counts %v buckets %v: %d ns, want %d", tc.counts, tc.buckets, got, tc.want)
		}
	}
}
