package metrics

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// SchemaVersion is the version of the status snapshot (/status.json,
// /status.csv). Fields are only ever added; removing one or changing what
// one means bumps it. docs/status.md lists every field (a test holds it).
const SchemaVersion = 1

// Status is the typed snapshot the status page, /status.json, /status.csv
// and `protoplex status` show. It is read from the counters behind
// /metrics (and the live state of the backend sets, guard and connection
// set); every list in it is bounded.
type Status struct {
	SchemaVersion int          `json:"schema_version"`
	GeneratedAt   time.Time    `json:"generated_at"`
	Admin         bool         `json:"admin"` // the actions are enabled
	Totals        Totals       `json:"totals"`
	Listeners     []Listener   `json:"listeners"`
	Routes        []RouteState `json:"routes"`
	Identify      Identify     `json:"identify"`
	Guard         GuardState   `json:"guard"`
	UDP           UDPState     `json:"udp"`
	Cluster       ClusterState `json:"cluster"`
	Connections   Connections  `json:"connections"`
}

// Totals are the process's figures.
type Totals struct {
	Version          string    `json:"version"`
	StartedAt        time.Time `json:"started_at"`
	UptimeSeconds    float64   `json:"uptime_seconds"`
	Active           int64     `json:"connections_active"`
	Accepted         int64     `json:"connections_accepted"`
	MaxConnections   int       `json:"max_connections"`
	FDsOpen          int64     `json:"fds_open"`  // process_open_fds; 0 where the OS has none
	FDsLimit         int64     `json:"fds_limit"` // process_max_fds
	MemoryBytes      int64     `json:"memory_bytes"`
	HeapBytes        int64     `json:"heap_bytes"`
	Goroutines       int64     `json:"goroutines"`
	Draining         bool      `json:"draining"`
	ConfigFile       string    `json:"config_file"`
	ConfigHash       string    `json:"config_hash"`
	LastReloadAt     time.Time `json:"last_reload_at"` // zero before the first
	LastReloadResult string    `json:"last_reload_result"`
	ReloadsOK        int64     `json:"reloads_success"`
	ReloadsFailed    int64     `json:"reloads_failure"`
}

// Listener is one data listener.
type Listener struct {
	Transport string `json:"transport"` // tcp, unix, udp
	Addr      string `json:"addr"`
}

// RouteState is one configured route and its targets.
type RouteState struct {
	Route           string        `json:"route"` // its label, as in logs: TLS[sni=a.example]
	Protocol        string        `json:"protocol"`
	SNI             []string      `json:"sni"`
	ALPN            []string      `json:"alpn"`
	Host            []string      `json:"host"`
	Balance         string        `json:"balance"`
	InProcess       bool          `json:"in_process"`
	Identified      int64         `json:"identified_total"`
	ConnRate10s     float64       `json:"conn_rate_10s"`
	ConnRate1m      float64       `json:"conn_rate_1m"`
	BytesInRate10s  float64       `json:"bytes_in_rate_10s"` // client to backend, per second
	BytesInRate1m   float64       `json:"bytes_in_rate_1m"`
	BytesOutRate10s float64       `json:"bytes_out_rate_10s"` // backend to client
	BytesOutRate1m  float64       `json:"bytes_out_rate_1m"`
	BytesIn         int64         `json:"bytes_in_total"`
	BytesOut        int64         `json:"bytes_out_total"`
	Targets         []TargetState `json:"targets"`
}

// TargetState is one backend target of a route. TargetFields lists its
// fields for every output format.
type TargetState struct {
	Route           string  `json:"route"`
	Protocol        string  `json:"protocol"`
	Target          string  `json:"target"`
	State           string  `json:"state"` // up, down, drain, maint
	Held            bool    `json:"held"`  // an operator set drain or maint
	SinceSeconds    float64 `json:"since_seconds"`
	Check           string  `json:"check"` // ok, fail, or "" without active checks
	CheckError      string  `json:"check_error"`
	CheckDuration   float64 `json:"check_duration_seconds"`
	Active          int64   `json:"active"`
	Weight          int     `json:"weight"`
	Load            float64 `json:"load"`
	ConnRate10s     float64 `json:"conn_rate_10s"`
	ConnRate1m      float64 `json:"conn_rate_1m"`
	Connections     int64   `json:"connections_total"`
	DialErrors      int64   `json:"dial_errors_total"`
	DialErrors1m    int64   `json:"dial_errors_1m"`
	BytesInRate10s  float64 `json:"bytes_in_rate_10s"` // client to backend, per second
	BytesInRate1m   float64 `json:"bytes_in_rate_1m"`
	BytesOutRate10s float64 `json:"bytes_out_rate_10s"` // backend to client
	BytesOutRate1m  float64 `json:"bytes_out_rate_1m"`
	BytesIn         int64   `json:"bytes_in_total"`
	BytesOut        int64   `json:"bytes_out_total"`
}

// Target states.
const (
	StateUp    = "up"
	StateDown  = "down"
	StateDrain = "drain"
	StateMaint = "maint"
)

// Problem reports whether the target needs an operator's eye: not up, a
// failed check, or dial errors in the last minute.
func (t *TargetState) Problem() bool {
	return t.State != StateUp || t.Check == "fail" || t.DialErrors1m > 0
}

// Identify is identification's outcomes.
type Identify struct {
	Matched  []Count `json:"matched"`  // by protocol
	Failures []Count `json:"failures"` // by reason: no_match, timeout, ...
}

// Count is one labelled total.
type Count struct {
	Name  string `json:"name"`
	Count int64  `json:"count"`
}

// GuardState is the guard's bans and busiest sources, bounded.
type GuardState struct {
	Banned      []Ban    `json:"banned"`
	BannedTotal int      `json:"banned_total"`
	TopSources  []Source `json:"top_sources"`
	Tracked     int64    `json:"tracked_sources"`
}

// Ban is one banned source.
type Ban struct {
	Source           string  `json:"source"`
	Reason           string  `json:"reason"`
	RemainingSeconds float64 `json:"remaining_seconds"`
}

// Source is one source and its open connections.
type Source struct {
	Source      string `json:"source"`
	Connections int    `json:"connections"`
}

// UDPState is the UDP flows.
type UDPState struct {
	FlowsActive int64      `json:"flows_active"`
	Protocols   []UDPCount `json:"protocols"`
}

// UDPCount is one protocol's UDP totals.
type UDPCount struct {
	Protocol string `json:"protocol"`
	Flows    int64  `json:"flows_total"`
	BytesIn  int64  `json:"bytes_in_total"`
	BytesOut int64  `json:"bytes_out_total"`
}

// ClusterState is cluster mode's view; Distributed false leaves the rest
// empty.
type ClusterState struct {
	Distributed   bool   `json:"distributed"`
	NodeID        string `json:"node_id"`
	EtcdConnected bool   `json:"etcd_connected"`
	Nodes         int64  `json:"nodes"`
	Services      int    `json:"services"`
	// Members lists the registered nodes, by id, at most MaxClusterMembers.
	Members []ClusterMember `json:"members"`
}

// MaxClusterMembers bounds the node list of a status snapshot.
const MaxClusterMembers = 256

// ClusterMember is one node registered in etcd.
type ClusterMember struct {
	ID            string  `json:"id"`
	Address       string  `json:"address"`
	Version       string  `json:"version"`
	UptimeSeconds float64 `json:"uptime_seconds"`
}

// Connections lists the oldest live connections, bounded.
type Connections struct {
	Listed []Conn `json:"listed"`
}

// Conn is one live connection.
type Conn struct {
	ID         uint64  `json:"id"`
	Client     string  `json:"client"`
	AgeSeconds float64 `json:"age_seconds"`
}

// Field is one column of the target table: its name (the JSON key and the
// CSV header), its heading, what it means, how the page formats it, and
// its value. TargetFields drives
// the page's table, the CSV header and rows, and `protoplex status`.
type Field struct {
	Name  string
	Title string // the column's heading on the page and in `protoplex status`
	Doc   string
	Kind  string // text, int, rate (per second), bytes/s, seconds, state, bool
	Get   func(*TargetState) any
}

// TargetFields are the columns of every target listing, in order.
var TargetFields = []Field{
	{"route", "route", "the route's label", "text", func(t *TargetState) any { return t.Route }},
	{"protocol", "protocol", "the route's protocol", "text", func(t *TargetState) any { return t.Protocol }},
	{"target", "target", "the target as configured", "text", func(t *TargetState) any { return t.Target }},
	{"state", "state", "up, down, drain or maint", "state", func(t *TargetState) any { return t.State }},
	{"held", "held", "an operator holds it in drain or maint", "bool", func(t *TargetState) any { return t.Held }},
	{"since_seconds", "since", "time since the state last changed", "seconds", func(t *TargetState) any { return t.SinceSeconds }},
	{"check", "check", "the last active health check: ok, fail, or empty without checks", "text", func(t *TargetState) any { return t.Check }},
	{"check_duration_seconds", "check time", "how long the last check took", "seconds", func(t *TargetState) any { return t.CheckDuration }},
	{"active", "active", "connections open to it now", "int", func(t *TargetState) any { return t.Active }},
	{"weight", "weight", "its configured weight", "int", func(t *TargetState) any { return t.Weight }},
	{"load", "load", "active connections per unit of weight", "float", func(t *TargetState) any { return t.Load }},
	{"conn_rate_10s", "conn/s 10s", "new connections per second over the last 10 s", "rate", func(t *TargetState) any { return t.ConnRate10s }},
	{"conn_rate_1m", "conn/s 1m", "new connections per second over the last minute", "rate", func(t *TargetState) any { return t.ConnRate1m }},
	{"bytes_in_rate_10s", "in/s 10s", "bytes per second client to backend over the last 10 s", "bytes/s", func(t *TargetState) any { return t.BytesInRate10s }},
	{"bytes_in_rate_1m", "in/s 1m", "the same over the last minute", "bytes/s", func(t *TargetState) any { return t.BytesInRate1m }},
	{"bytes_out_rate_10s", "out/s 10s", "bytes per second backend to client over the last 10 s", "bytes/s", func(t *TargetState) any { return t.BytesOutRate10s }},
	{"bytes_out_rate_1m", "out/s 1m", "the same over the last minute", "bytes/s", func(t *TargetState) any { return t.BytesOutRate1m }},
	{"connections_total", "conns", "connections given to clients since it was configured", "int", func(t *TargetState) any { return t.Connections }},
	{"dial_errors_total", "dial errors", "failed dials since it was configured", "int", func(t *TargetState) any { return t.DialErrors }},
	{"dial_errors_1m", "dial err 1m", "failed dials in the last minute", "int", func(t *TargetState) any { return t.DialErrors1m }},
	{"bytes_in_total", "in", "bytes forwarded client to backend, by connections ended", "bytes", func(t *TargetState) any { return t.BytesIn }},
	{"bytes_out_total", "out", "bytes forwarded backend to client, by connections ended", "bytes", func(t *TargetState) any { return t.BytesOut }},
	{"check_error", "check error", "why the last check failed", "text", func(t *TargetState) any { return t.CheckError }},
}

// FormatRaw is v as /status.csv writes it: numbers in full, booleans as
// 0/1, times as RFC 3339.
func FormatRaw(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case bool:
		if v {
			return "1"
		}
		return "0"
	case int:
		return strconv.Itoa(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}

// Counter reads c's value (a counter of this package's registry); 0 for a
// collector that is not a counter.
func Counter(c prometheus.Collector) int64 {
	m, ok := c.(prometheus.Metric)
	if !ok {
		return 0
	}
	var d dto.Metric
	if m.Write(&d) != nil {
		return 0
	}
	switch {
	case d.Counter != nil:
		return int64(d.Counter.GetValue())
	case d.Gauge != nil:
		return int64(d.Gauge.GetValue())
	}
	return 0
}

// Count returns how many connections were identified as the route's
// protocol.
func (r *Route) Count() int64 { return r.count.Load() }

// IdentifyFailures returns the identification failures by reason, in the
// order the reasons are defined.
func (s *Stats) IdentifyFailures() []Count {
	out := make([]Count, 0, len(identifyFailures))
	for _, f := range identifyFailures {
		out = append(out, Count{Name: f.String(), Count: Counter(s.failedBy[f])})
	}
	return out
}

// LastReload returns when the last reload was tried and its result
// ("success", "failure"; "" before any), and the totals of each.
func (s *Stats) LastReload() (at time.Time, result string, ok, failed int64) {
	s.mu.Lock()
	at, result = s.lastReload, s.lastResult
	s.mu.Unlock()
	return at, result, Counter(s.reloadOK), Counter(s.reloadFailed)
}

// RateWindow is how many one-second samples Rates keeps: a minute and one.
const RateWindow = 61

// Rates keeps the last RateWindow samples of a set of counters, each a
// key's values, so rates over 10 s and a minute can be read from counters
// that only ever grow. It holds at most RateWindow maps of the keys given
// (routes and targets: bounded by the configuration). Safe for concurrent
// use.
type Rates struct {
	mu      sync.Mutex
	samples [RateWindow]rateSample
	next, n int
}

type rateSample struct {
	at time.Time
	v  map[string][]int64
}

// Add records v, the counters' values at at.
func (r *Rates) Add(at time.Time, v map[string][]int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples[r.next] = rateSample{at: at, v: v}
	r.next = (r.next + 1) % RateWindow
	r.n = min(r.n+1, RateWindow)
}

// Delta returns how much key's i-th counter grew over the last window (or
// since the oldest sample, when fewer are kept), and the time that
// covers; 0 and 0 with fewer than two samples. A counter that went
// backwards (a target configured again) counts from zero.
func (r *Rates) Delta(key string, i int, window time.Duration) (int64, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n < 2 {
		return 0, 0
	}
	newest := r.samples[(r.next-1+RateWindow)%RateWindow]
	old := newest
	for k := 2; k <= r.n; k++ {
		s := r.samples[(r.next-k+RateWindow)%RateWindow]
		old = s
		if newest.at.Sub(s.at) >= window {
			break
		}
	}
	dt := newest.at.Sub(old.at)
	nv, ov := value(newest.v, key, i), value(old.v, key, i)
	if nv < ov {
		ov = 0
	}
	return nv - ov, dt
}

// Rate is Delta per second.
func (r *Rates) Rate(key string, i int, window time.Duration) float64 {
	d, dt := r.Delta(key, i, window)
	if dt <= 0 {
		return 0
	}
	return float64(d) / dt.Seconds()
}

func value(m map[string][]int64, key string, i int) int64 {
	if v := m[key]; i < len(v) {
		return v[i]
	}
	return 0
}

// collect reads every metric c collects: its name, labels and value.
func collect(c prometheus.Collector, fn func(name string, labels map[string]string, v float64)) {
	ch := make(chan prometheus.Metric, 16)
	go func() { c.Collect(ch); close(ch) }()
	for m := range ch {
		var d dto.Metric
		if m.Write(&d) != nil {
			continue
		}
		labels := map[string]string{}
		for _, l := range d.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		var v float64
		switch {
		case d.Counter != nil:
			v = d.Counter.GetValue()
		case d.Gauge != nil:
			v = d.Gauge.GetValue()
		}
		fn(descName(m.Desc()), labels, v)
	}
}

// descName is the fqName of d, which Desc only shows in its String.
func descName(d *prometheus.Desc) string {
	s := d.String()
	if _, rest, ok := strings.Cut(s, `fqName: "`); ok {
		name, _, _ := strings.Cut(rest, `"`)
		return name
	}
	return ""
}

// ReadProcess fills t's descriptors and resident memory from the process
// collector behind /metrics (process_open_fds, process_max_fds,
// process_resident_memory_bytes); they stay 0 where the OS gives none.
func (s *Stats) ReadProcess(t *Totals) {
	collect(s.process, func(name string, _ map[string]string, v float64) {
		switch name {
		case "process_open_fds":
			t.FDsOpen = int64(v)
		case "process_max_fds":
			t.FDsLimit = int64(v)
		case "process_resident_memory_bytes":
			t.MemoryBytes = int64(v)
		}
	})
}

// ReadUDP fills u from the UDP counters behind /metrics: the flows in the
// table, and each protocol's flows and bytes, in the order first seen.
func (s *Stats) ReadUDP(u *UDPState) {
	u.FlowsActive = Counter(s.UDP.Active)
	by := map[string]*UDPCount{}
	var order []string
	at := func(p string) *UDPCount {
		if by[p] == nil {
			by[p] = &UDPCount{Protocol: p}
			order = append(order, p)
		}
		return by[p]
	}
	collect(s.UDP.flows, func(_ string, l map[string]string, v float64) { at(l["protocol"]).Flows = int64(v) })
	collect(s.UDP.bytes, func(_ string, l map[string]string, v float64) {
		if l["direction"] == ClientToBackend {
			at(l["protocol"]).BytesIn = int64(v)
		} else {
			at(l["protocol"]).BytesOut = int64(v)
		}
	})
	for _, p := range order {
		u.Protocols = append(u.Protocols, *by[p])
	}
}
