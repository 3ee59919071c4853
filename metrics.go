package protoplex

import (
	"math"
	"net"
	"net/http"
	rtmetrics "runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/darkit/protoplex/internal/guard"
	"github.com/darkit/protoplex/internal/identify"
	"github.com/darkit/protoplex/internal/proxy"
	"github.com/darkit/protoplex/internal/upstream"
)

// PoolMetrics: backend connections dialed (Created) vs served warm (Reused).
type PoolMetrics struct {
	ConnectionsCreated int64 `json:"connections_created"`
	ConnectionsReused  int64 `json:"connections_reused"`
	Active             int64 `json:"active"`
	Idle               int64 `json:"idle"`
	HealthChecks       int64 `json:"health_checks"`
	DialFailures       int64 `json:"dial_failures"`
}

// SecurityMetrics counts admissions and refusals.
type SecurityMetrics = guard.Metrics

// PoolOperationStats counts one byte-pool tier's operations.
type PoolOperationStats struct {
	Gets   int64 `json:"gets"`
	Puts   int64 `json:"puts"`
	Misses int64 `json:"misses"`
	InUse  int64 `json:"in_use"`
}

// DetailedMemoryPoolMetrics describes the identification buffer pools and the
// Go heap.
type DetailedMemoryPoolMetrics struct {
	PoolStats struct {
		SmallPool    PoolOperationStats `json:"small_pool"`
		MediumPool   PoolOperationStats `json:"medium_pool"`
		LargePool    PoolOperationStats `json:"large_pool"`
		IdentityPool PoolOperationStats `json:"identity_pool"`
	} `json:"pool_stats"`
	MemoryStats struct {
		CurrentAllocatedBytes int64  `json:"current_allocated_bytes"`
		RuntimeAllocBytes     uint64 `json:"runtime_alloc_bytes"`
	} `json:"memory_stats"`
	GCStats struct {
		GCRuns       uint32 `json:"gc_runs"`
		GCPauseAvgNs uint64 `json:"gc_pause_avg_ns"`
	} `json:"gc_stats"`
}

// ProtocolManagerMetrics is a snapshot of a manager's counters.
type ProtocolManagerMetrics struct {
	ActiveConnections int64                     `json:"active_connections"`
	ConnectionPool    PoolMetrics               `json:"connection_pool"`
	Security          SecurityMetrics           `json:"security"`
	MemoryPool        DetailedMemoryPoolMetrics `json:"memory_pool"`
	// CacheHitRate is identification cache hits / lookups (0..1).
	CacheHitRate float64 `json:"cache_hit_rate"`
	// Per protocol: connections identified.
	Identified map[string]int64 `json:"identified"`
}

// GetMetrics returns current metrics. It reads atomics only; the memory
// figures call runtime.ReadMemStats, so don't call it per connection.
func (pm *ProtocolManager) GetMetrics() ProtocolManagerMetrics {
	var m ProtocolManagerMetrics
	m.ActiveConnections = pm.conns.len()
	if rt := pm.routing.Load(); rt != nil {
		for _, b := range rt.backends {
			if b != nil {
				m.ConnectionPool.ConnectionsCreated += b.Created()
				m.ConnectionPool.ConnectionsReused += b.Reused()
				m.ConnectionPool.Idle += b.Idle()
				m.ConnectionPool.HealthChecks += b.HealthChecks()
				for _, st := range b.Status() {
					m.ConnectionPool.Active += st.Active
				}
			}
		}
	}
	if pm.guard != nil {
		m.Security = pm.guard.Metrics()
	}
	t := &pm.bufs.tiers
	m.MemoryPool.PoolStats.IdentityPool = t[0].stats()
	m.MemoryPool.PoolStats.SmallPool = t[1].stats()
	m.MemoryPool.PoolStats.MediumPool = t[2].stats()
	m.MemoryPool.PoolStats.LargePool = t[3].stats()
	m.MemoryPool.MemoryStats.CurrentAllocatedBytes = pm.bufs.current.Load()
	// runtime/metrics, not ReadMemStats: no stop-the-world.
	samples := []rtmetrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/cycles/total:gc-cycles"},
		{Name: "/sched/pauses/total/gc:seconds"},
	}
	rtmetrics.Read(samples)
	if v := samples[0].Value; v.Kind() == rtmetrics.KindUint64 {
		m.MemoryPool.MemoryStats.RuntimeAllocBytes = v.Uint64()
	}
	if v := samples[1].Value; v.Kind() == rtmetrics.KindUint64 {
		m.MemoryPool.GCStats.GCRuns = uint32(v.Uint64())
	}
	if v := samples[2].Value; v.Kind() == rtmetrics.KindFloat64Histogram {
		h := v.Float64Histogram()
		var n uint64
		var sum float64
		for i, c := range h.Counts {
			if c == 0 {
				continue
			}
			lo, hi := h.Buckets[i], h.Buckets[i+1]
			if math.IsInf(lo, -1) {
				lo = 0
			}
			if math.IsInf(hi, 1) {
				hi = lo
			}
			n += c
			sum += float64(c) * (lo + hi) / 2 // bucket midpoint
		}
		if n > 0 {
			m.MemoryPool.GCStats.GCPauseAvgNs = uint64(sum / float64(n) * 1e9)
		}
	}
	lookups, hits := pm.stats.cache.Load()
	if lookups > 0 {
		m.CacheHitRate = float64(hits) / float64(lookups)
	}
	m.Identified = pm.stats.identifiedSnapshot()
	return m
}

// Metric close/refusal reasons that are not security.Reason values.
const (
	reasonMaxConnections = "max_connections"
	reasonProxyHeader    = "proxy_header"
)

// stats holds the manager's Prometheus collectors, registered in a registry
// of its own (no global state: two managers in one process don't clash).
type stats struct {
	reg *prometheus.Registry

	accepted         prometheus.Counter
	active           prometheus.Gauge
	refused          *prometheus.CounterVec
	closedVec        *prometheus.CounterVec
	identifyFailures *prometheus.CounterVec
	identifiedVec    *prometheus.CounterVec
	identifyDur      *prometheus.HistogramVec
	bytes            *prometheus.CounterVec
	dialErrors       *prometheus.CounterVec
	dialDur          *prometheus.HistogramVec
	backendUp        *prometheus.GaugeVec
	reloads          *prometheus.CounterVec
	pipeFallbacks    prometheus.Counter
	clusterNodes     prometheus.Gauge
	discovered       *prometheus.GaugeVec

	cache identify.CacheCounters

	mu     sync.Mutex
	routes map[string]*routeStats
}

// routeStats are one protocol's pre-resolved children, so the connection
// path never hashes label values.
type routeStats struct {
	identified       prometheus.Counter
	identifyDuration prometheus.Observer
	up, down         prometheus.Counter
	closed           [proxy.Aborted + 1]prometheus.Counter // by close reason
	dialError        prometheus.Counter                    // closed{reason=dial_error}
	count            atomic.Int64                          // identified, for GetMetrics
}

func newStats() *stats {
	s := &stats{reg: prometheus.NewRegistry(), routes: map[string]*routeStats{}}
	s.accepted = prometheus.NewCounter(prometheus.CounterOpts{Name: "protoplex_connections_accepted_total", Help: "Connections accepted."})
	s.active = prometheus.NewGauge(prometheus.GaugeOpts{Name: "protoplex_connections_active", Help: "Connections open now."})
	s.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "protoplex_connections_refused_total", Help: "Connections refused before identification, by reason."}, []string{"reason"})
	s.closedVec = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "protoplex_connections_closed_total", Help: "Routed connections closed, by protocol and reason."}, []string{"protocol", "reason"})
	s.identifyFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "protoplex_identify_failures_total", Help: "Connections not identified, by reason."}, []string{"reason"})
	s.identifiedVec = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "protoplex_identified_total", Help: "Connections identified, by protocol."}, []string{"protocol"})
	s.identifyDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "protoplex_identify_duration_seconds", Help: "Time from accept to a routing decision.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .05, .1, .5, 1, 2.5, 5, 15}}, []string{"protocol"})
	s.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "protoplex_forwarded_bytes_total", Help: "Bytes forwarded, by protocol and direction."}, []string{"protocol", "direction"})
	s.dialErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "protoplex_dial_errors_total", Help: "Failed backend dials."}, []string{"protocol", "target"})
	s.dialDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "protoplex_dial_duration_seconds", Help: "Backend dial time.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .05, .1, .5, 1, 5}}, []string{"protocol"})
	s.backendUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "protoplex_backend_up", Help: "1 if the backend target is considered healthy."}, []string{"protocol", "target"})
	s.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "protoplex_config_reloads_total", Help: "Configuration reloads, by result."}, []string{"result"})
	s.pipeFallbacks = prometheus.NewCounter(prometheus.CounterOpts{Name: "protoplex_pipe_fallbacks_total",
		Help: "Forwarded reads copied through a buffer because no splice pipe could be had (fd or kernel memory shortage)."})
	s.clusterNodes = prometheus.NewGauge(prometheus.GaugeOpts{Name: "protoplex_cluster_nodes", Help: "protoplex nodes registered in etcd."})
	s.discovered = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "protoplex_discovered_backends", Help: "Backends discovered through etcd, by protocol."}, []string{"protocol"})
	s.reg.MustRegister(s.accepted, s.active, s.refused, s.closedVec, s.identifyFailures, s.identifiedVec, s.identifyDur,
		s.bytes, s.dialErrors, s.dialDur, s.backendUp, s.reloads, s.pipeFallbacks, s.clusterNodes, s.discovered,
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "protoplex_identify_cache_lookups_total", Help: "Identification cache lookups."},
			func() float64 { l, _ := s.cache.Load(); return float64(l) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "protoplex_identify_cache_hits_total", Help: "Identification cache hits."},
			func() float64 { _, h := s.cache.Load(); return float64(h) }),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, r := range []string{reasonMaxConnections, reasonProxyHeader, "blacklist", "rate_limit", "per_ip_limit", "ddos_ban", "guard_full"} {
		s.refused.WithLabelValues(r)
	}
	for _, r := range []string{"success", "failure"} {
		s.reloads.WithLabelValues(r)
	}
	return s
}

func (s *stats) refuse(reason string) { s.refused.WithLabelValues(reason).Inc() }

func (s *stats) identifyFailed(f identify.Failure) {
	s.identifyFailures.WithLabelValues(f.String()).Inc()
}

// route returns protocol's pre-resolved collectors, creating them once.
func (s *stats) route(protocol string) *routeStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rs, ok := s.routes[protocol]; ok {
		return rs
	}
	rs := &routeStats{
		identified:       s.identifiedVec.WithLabelValues(protocol),
		identifyDuration: s.identifyDur.WithLabelValues(protocol),
		up:               s.bytes.WithLabelValues(protocol, "client_to_backend"),
		down:             s.bytes.WithLabelValues(protocol, "backend_to_client"),
		dialError:        s.closedVec.WithLabelValues(protocol, "dial_error"),
	}
	for r := range rs.closed {
		rs.closed[r] = s.closedVec.WithLabelValues(protocol, proxy.CloseReason(r).String())
	}
	s.routes[protocol] = rs
	return rs
}

func (s *stats) identifiedSnapshot() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int64, len(s.routes))
	for name, rs := range s.routes {
		out[name] = rs.count.Load()
	}
	return out
}

// dialObserver feeds one protocol's dial metrics.
func (s *stats) dialObserver(protocol string) func(string, time.Duration, error) {
	dur := s.dialDur.WithLabelValues(protocol)
	var upGauges sync.Map // target → its backend_up gauge, resolved once
	return func(target string, d time.Duration, err error) {
		dur.Observe(d.Seconds())
		up := 1.0
		if err != nil {
			s.dialErrors.WithLabelValues(protocol, target).Inc()
			up = 0
		}
		// Passive health: the last dial's outcome.
		g, ok := upGauges.Load(target)
		if !ok {
			g, _ = upGauges.LoadOrStore(target, s.backendUp.WithLabelValues(protocol, target))
		}
		g.(prometheus.Gauge).Set(up)
	}
}

// registerManager adds the collectors that read the manager's state when
// scraped (no work on the connection path).
func (s *stats) registerManager(pm *ProtocolManager) {
	sum := func(f func(*upstream.Set) int64) func() float64 {
		return func() float64 {
			var n int64
			if rt := pm.routing.Load(); rt != nil {
				for _, b := range rt.backends {
					if b != nil {
						n += f(b)
					}
				}
			}
			return float64(n)
		}
	}
	s.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "protoplex_draining", Help: "1 while shutting down."}, func() float64 {
			if pm.Draining() {
				return 1
			}
			return 0
		}),
		// Counters of the current backend sets (a reload that replaces a
		// set starts its counts again, as a restarted process would).
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "protoplex_pool_connections_created_total", Help: "Backend connections dialed."},
			sum((*upstream.Set).Created)),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "protoplex_pool_connections_reused_total", Help: "Clients served with a pre-dialed pool connection."},
			sum((*upstream.Set).Reused)),
	)
}

// stateObserver feeds active health check transitions.
func (s *stats) stateObserver(protocol string) func(string, bool) {
	return func(target string, up bool) {
		v := 0.0
		if up {
			v = 1
		}
		s.backendUp.WithLabelValues(protocol, target).Set(v)
	}
}

// promExporter is a running /metrics or /health server.
type promExporter struct{ *monitorServer }

// MetricsHandler returns the Prometheus handler of this manager's registry.
func (pm *ProtocolManager) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(pm.stats.reg, promhttp.HandlerOpts{Registry: pm.stats.reg})
}

// EnablePrometheusMetrics serves /metrics on port of 127.0.0.1: the
// metrics reveal traffic and backends, so other machines reach them only
// when asked for with ServeMetrics (e.g. "0.0.0.0:9091").
func (pm *ProtocolManager) EnablePrometheusMetrics(port int) error {
	return pm.ServeMetrics(net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
}

// ServeMetrics serves /metrics on addr until Close, within the limits of
// every monitoring port: 64 concurrent connections, 8 of them per source
// (when full, an idle keep-alive connection makes room, else the new one is
// closed at once), 3 s to read a request header and 5 s the whole request,
// 10 s to write a reply, 30 s idle between keep-alive requests, 8 KiB of
// headers (docs/security.md).
func (pm *ProtocolManager) ServeMetrics(addr string) error {
	_, err := pm.serveMetricsWith(addr, defaultMonitorLimits)
	return err
}

func (pm *ProtocolManager) serveMetricsWith(addr string, lim monitorLimits) (string, error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", pm.MetricsHandler())
	return pm.startMonitor(&pm.prom, "metrics server", addr, mux, lim)
}

// MetricsAddr returns the metrics listener's address, or "" when disabled.
func (pm *ProtocolManager) MetricsAddr() string {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	if pm.prom == nil {
		return ""
	}
	return pm.prom.ln.Addr().String()
}
