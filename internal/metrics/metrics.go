// Package metrics holds a manager's Prometheus collectors and the typed
// snapshot of its counters (GetMetrics). Metric names, labels and help
// texts are the contract of docs/ARCHITECTURE.md "Metric names".
//
// Every collector lives in a registry of the Stats that owns it, never in
// the global one, so two managers in one process don't clash. Labels never
// carry client addresses; protocol, route and target values come from the
// configuration, so cardinality is bounded, and the series of those a
// reload removed go once nothing counts into them (held.go). A route is a
// protocol with its conditions, as the access log names it
// (TLS[sni=a.example]), so routes that share a protocol are told apart.
package metrics

import (
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/darkit/protoplex/internal/guard"
	"github.com/darkit/protoplex/internal/identify"
	"github.com/darkit/protoplex/internal/proxy"
)

// Reasons of protoplex_connections_refused_total that are not guard.Reason
// values (those are labelled with guard.Reason.String()).
const (
	RefusedMaxConnections = "max_connections" // the manager's connection cap
	RefusedProxyHeader    = "proxy_header"    // a PROXY header missing or invalid from a trusted sender, or sent by an untrusted one
)

// ClosedDialError is the protoplex_connections_closed_total reason of a
// connection whose backend could not be dialed; the other reasons are
// proxy.CloseReason.String().
const ClosedDialError = "dial_error"

// Values of the direction label of protoplex_forwarded_bytes_total.
const (
	ClientToBackend = "client_to_backend"
	BackendToClient = "backend_to_client"
)

// refusedReasons are the refusal reasons created at zero, so a rate over
// them works before the first refusal.
var refusedReasons = []string{
	RefusedMaxConnections, RefusedProxyHeader,
	guard.Blacklisted.String(), guard.RateLimited.String(), guard.PerIPLimit.String(), guard.Banned.String(), guard.GuardFull.String(),
}

// identifyFailures are the identify.Failure values created at zero.
var identifyFailures = []identify.Failure{
	identify.NoMatch, identify.Timeout, identify.ClientClosed, identify.ReadError, identify.BufferFull, identify.Fragmented,
}

// Stats are one manager's collectors. Counters the connection path touches
// are resolved once (fields, Route), so it never hashes label values.
// A Stats is safe for concurrent use.
type Stats struct {
	Accepted      prometheus.Counter // protoplex_connections_accepted_total
	Active        prometheus.Gauge   // protoplex_connections_active
	PipeFallbacks prometheus.Counter // protoplex_pipe_fallbacks_total
	ClusterNodes  prometheus.Gauge   // protoplex_cluster_nodes

	// Cache receives the identification cache's lookups and hits
	// (identify.New's counters), exported as
	// protoplex_identify_cache_{lookups,hits}_total.
	Cache identify.CacheCounters

	UDP *UDP // the UDP engine's collectors

	reg     *prometheus.Registry
	process prometheus.Collector // process_*: the status page reads it alone

	refused          *prometheus.CounterVec
	refusedBy        map[string]prometheus.Counter // read-only after New
	closed           *prometheus.CounterVec
	identifyFailures *prometheus.CounterVec
	failedBy         map[identify.Failure]prometheus.Counter // read-only after New
	identified       *prometheus.CounterVec
	identifyDur      *prometheus.HistogramVec
	bytes            *prometheus.CounterVec
	dialErrors       *prometheus.CounterVec
	dialDur          *prometheus.HistogramVec
	backendUp        *prometheus.GaugeVec
	reloadOK         prometheus.Counter
	reloadFailed     prometheus.Counter
	upgradeOK        prometheus.Counter
	upgradeFailed    prometheus.Counter
	upgradeMoved     prometheus.Counter
	upgradeLeft      prometheus.Counter
	upgradeFlows     [2]prometheus.Counter // UDP flows moved, left
	upgradeTook      prometheus.Gauge
	discovered       *prometheus.GaugeVec

	// holds: the live holders of each route, protocol and target series
	// (held.go), shared with UDP.
	holds holds

	mu sync.Mutex
	// routes: the Route of each protocol and route, while one is
	// reachable (a live snapshot, or a connection still counting into it).
	routes map[[2]string]weak.Pointer[Route]
	// discoveredSet: the protocols with a discovered_backends series.
	discoveredSet map[string]bool
	// lastReload and lastResult: the last Reload, for the status page.
	lastReload time.Time
	lastResult string
	// series: the protocol, route and target of every backend_up series,
	// for RetainTargets.
	series map[[3]string]bool
}

// Route is one route's collectors, resolved once by Stats.Route.
type Route struct {
	Up   prometheus.Counter // forwarded bytes client → backend, replayed ones included
	Down prometheus.Counter // forwarded bytes backend → client
	// Closed counts forwarded connections ended, by proxy.CloseReason.
	Closed [proxy.Aborted + 1]prometheus.Counter
	// DialError counts connections closed because no backend could be dialed.
	DialError prometheus.Counter

	protocol    string
	identified  prometheus.Counter
	identifyDur prometheus.Observer
	count       atomic.Int64 // identified, for Stats.Identified
}

// Identify counts a connection identified as the route's protocol,
// elapsed after it was accepted.
func (r *Route) Identify(elapsed time.Duration) {
	r.identified.Inc()
	r.count.Add(1)
	r.identifyDur.Observe(elapsed.Seconds())
}

// Forwarded counts a forwarded connection of route r that ended as fs says:
// its bytes each way, its close reason, and the reads that had to be copied
// through a buffer.
func (s *Stats) Forwarded(r *Route, fs proxy.Stats) {
	r.Up.Add(float64(fs.Up))
	r.Down.Add(float64(fs.Down))
	r.Closed[fs.Reason].Inc()
	if fs.PipeFallbacks > 0 {
		s.PipeFallbacks.Add(float64(fs.PipeFallbacks))
	}
}

// New returns collectors registered in a registry of their own, with the
// Go runtime and process collectors. The refusal, identification failure
// and reload result label values exist at zero from the start.
func New() *Stats {
	s := &Stats{
		reg:       prometheus.NewRegistry(),
		process:   collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		routes:    map[[2]string]weak.Pointer[Route]{},
		series:    map[[3]string]bool{},
		refusedBy: map[string]prometheus.Counter{},
		failedBy:  map[identify.Failure]prometheus.Counter{},
	}
	s.Accepted = prometheus.NewCounter(prometheus.CounterOpts{Name: "protoplex_connections_accepted_total", Help: "Connections accepted."})
	s.Active = prometheus.NewGauge(prometheus.GaugeOpts{Name: "protoplex_connections_active", Help: "Connections open now."})
	s.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "protoplex_connections_refused_total", Help: "Connections refused before identification, by reason."}, []string{"reason"})
	s.closed = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "protoplex_connections_closed_total", Help: "Routed connections closed, by route and reason."}, []string{"protocol", "route", "reason"})
	s.identifyFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "protoplex_identify_failures_total", Help: "Connections no route was found for, by reason (those the fallback route takes are identified as it)."}, []string{"reason"})
	s.identified = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "protoplex_identified_total", Help: "Connections identified, by route."}, []string{"protocol", "route"})
	s.identifyDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "protoplex_identify_duration_seconds", Help: "Time from accept to a routing decision.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .05, .1, .5, 1, 2.5, 5, 15}}, []string{"protocol", "route"})
	s.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "protoplex_forwarded_bytes_total", Help: "Bytes forwarded, by route and direction."}, []string{"protocol", "route", "direction"})
	s.dialErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "protoplex_dial_errors_total", Help: "Failed backend dials, by route and target."}, []string{"protocol", "route", "target"})
	s.dialDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "protoplex_dial_duration_seconds", Help: "Backend dial time.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .05, .1, .5, 1, 5}}, []string{"protocol", "route"})
	s.backendUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "protoplex_backend_up",
		Help: "What the active health checks find: 1 up, 0 down. Only targets of routes with health_check have a series; without checks a target's state is unknown (see protoplex_dial_errors_total)."},
		[]string{"protocol", "route", "target"})
	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "protoplex_config_reloads_total", Help: "Configuration reloads, by result."}, []string{"result"})
	upgrades := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "protoplex_upgrades_total",
		Help: "Binary upgrades, by result: a failure counted by the process that keeps serving, a success by the new process that took over."}, []string{"result"})
	s.upgradeMoved = prometheus.NewCounter(prometheus.CounterOpts{Name: "protoplex_upgrade_connections_moved_total",
		Help: "Established connections an upgrade moved into this process from the one it replaced."})
	s.upgradeLeft = prometheus.NewCounter(prometheus.CounterOpts{Name: "protoplex_upgrade_connections_left_total",
		Help: "Connections the replaced process kept to drain (in-process handlers, the goroutine data plane, connections not yet forwarding)."})
	s.upgradeFlows[0] = prometheus.NewCounter(prometheus.CounterOpts{Name: "protoplex_upgrade_flows_moved_total",
		Help: "UDP flows an upgrade moved into this process from the one it replaced, with their upstream sockets."})
	s.upgradeFlows[1] = prometheus.NewCounter(prometheus.CounterOpts{Name: "protoplex_upgrade_flows_left_total",
		Help: "UDP flows the replaced process kept to drain (the goroutine data plane, flows that could not move)."})
	s.upgradeTook = prometheus.NewGauge(prometheus.GaugeOpts{Name: "protoplex_upgrade_duration_seconds",
		Help: "How long the last upgrade into this process took, from its hello to the last connection moved."})
	s.PipeFallbacks = prometheus.NewCounter(prometheus.CounterOpts{Name: "protoplex_pipe_fallbacks_total",
		Help: "Forwarded reads copied through a buffer because no splice pipe could be had (fd or kernel memory shortage)."})
	s.ClusterNodes = prometheus.NewGauge(prometheus.GaugeOpts{Name: "protoplex_cluster_nodes", Help: "protoplex nodes registered in etcd."})
	s.discovered = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "protoplex_discovered_backends", Help: "Backends discovered through etcd, by protocol."}, []string{"protocol"})
	s.reg.MustRegister(s.Accepted, s.Active, s.refused, s.closed, s.identifyFailures, s.identified, s.identifyDur,
		s.bytes, s.dialErrors, s.dialDur, s.backendUp, reloads, upgrades, s.upgradeMoved, s.upgradeLeft, s.upgradeFlows[0], s.upgradeFlows[1], s.upgradeTook, s.PipeFallbacks, s.ClusterNodes, s.discovered,
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "protoplex_identify_cache_lookups_total", Help: "Identification cache lookups."},
			func() float64 { l, _ := s.Cache.Load(); return float64(l) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "protoplex_identify_cache_hits_total", Help: "Identification cache hits."},
			func() float64 { _, h := s.Cache.Load(); return float64(h) }),
		collectors.NewGoCollector(), s.process)
	for _, r := range refusedReasons {
		s.refusedBy[r] = s.refused.WithLabelValues(r)
	}
	for _, f := range identifyFailures {
		s.failedBy[f] = s.identifyFailures.WithLabelValues(f.String())
	}
	s.UDP = newUDP(s.reg, &s.holds)
	s.reloadOK = reloads.WithLabelValues("success")
	s.reloadFailed = reloads.WithLabelValues("failure")
	s.upgradeOK = upgrades.WithLabelValues("success")
	s.upgradeFailed = upgrades.WithLabelValues("failure")
	return s
}

// Registry returns the registry every collector of s is registered in.
func (s *Stats) Registry() *prometheus.Registry { return s.reg }

// Handler returns the Prometheus exposition handler of s's registry.
func (s *Stats) Handler() http.Handler {
	return promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg})
}

// RegisterState adds the collectors read from the manager when scraped, so
// they cost nothing on the connection path: protoplex_draining (1 while
// draining() is true), protoplex_pool_connections_created_total and
// protoplex_pool_connections_reused_total (the sums created() and reused()
// return). Call it once; a second call returns the registry's
// AlreadyRegisteredError.
func (s *Stats) RegisterState(draining func() bool, created, reused func() int64) error {
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "protoplex_draining", Help: "1 while shutting down."}, func() float64 {
			if draining() {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "protoplex_pool_connections_created_total", Help: "Backend connections dialed."},
			func() float64 { return float64(created()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "protoplex_pool_connections_reused_total", Help: "Clients served with a pre-dialed pool connection."},
			func() float64 { return float64(reused()) }),
	} {
		if err := s.reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Refuse counts a connection refused before identification: reason is
// RefusedMaxConnections, RefusedProxyHeader or a guard.Reason's String.
func (s *Stats) Refuse(reason string) {
	if c, ok := s.refusedBy[reason]; ok {
		c.Inc()
		return
	}
	s.refused.WithLabelValues(reason).Inc()
}

// IdentifyFailed counts a connection no route was found for; one the
// fallback route takes is not a failure (it is identified as that route).
func (s *Stats) IdentifyFailed(f identify.Failure) {
	if c, ok := s.failedBy[f]; ok {
		c.Inc()
		return
	}
	s.identifyFailures.WithLabelValues(f.String()).Inc()
}

// Upgrade counts a binary upgrade: taken over (ok), or failed.
func (s *Stats) Upgrade(ok bool) {
	if ok {
		s.upgradeOK.Inc()
	} else {
		s.upgradeFailed.Inc()
	}
}

// UpgradeMoved records an upgrade into this process once its connections
// have moved: how many moved, how many the old process kept to drain and
// how long it all took.
func (s *Stats) UpgradeMoved(moved, left int, took time.Duration) {
	s.upgradeMoved.Add(float64(moved))
	s.upgradeLeft.Add(float64(left))
	s.upgradeTook.Set(took.Seconds())
}

// UpgradeFlows records the UDP flows of an upgrade into this process: how
// many moved, how many the old process kept to drain.
func (s *Stats) UpgradeFlows(moved, left int) {
	s.upgradeFlows[0].Add(float64(moved))
	s.upgradeFlows[1].Add(float64(left))
}

// Reload counts a configuration reload, applied (ok) or rejected.
func (s *Stats) Reload(ok bool) {
	result := "failure"
	if ok {
		s.reloadOK.Inc()
		result = "success"
	} else {
		s.reloadFailed.Inc()
	}
	s.mu.Lock()
	s.lastReload, s.lastResult = time.Now(), result
	s.mu.Unlock()
}

// Discovered sets, per protocol, how many backends service discovery
// knows; the series of a protocol not in n any more is deleted, so that
// protocol names coming and going in etcd leave no series behind.
func (s *Stats) Discovered(n map[string]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.discoveredSet == nil {
		s.discoveredSet = map[string]bool{}
	}
	for p := range s.discoveredSet {
		if _, ok := n[p]; !ok {
			s.discovered.DeleteLabelValues(p)
			delete(s.discoveredSet, p)
		}
	}
	for p, v := range n {
		s.discovered.WithLabelValues(p).Set(float64(v))
		s.discoveredSet[p] = true
	}
}

// Route returns the collectors of route (a label unique among the routes,
// such as TLS[sni=a.example]) of protocol, the same while one is
// reachable: its identification counter and histogram, both byte
// directions and every close reason exist at zero from then on, until the
// Route is collected (held.go: no snapshot, backend set or connection
// holds it any more).
func (s *Stats) Route(protocol, route string) *Route {
	key := [2]string{protocol, route}
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.routes[key].Value(); r != nil {
		return r
	}
	r := &Route{protocol: protocol}
	k := track(r, &s.holds)
	r.identified = hold[prometheus.Counter](k, s.identified, protocol, route)
	r.identifyDur = hold[prometheus.Observer](k, s.identifyDur, protocol, route)
	r.Up = hold[prometheus.Counter](k, s.bytes, protocol, route, ClientToBackend)
	r.Down = hold[prometheus.Counter](k, s.bytes, protocol, route, BackendToClient)
	r.DialError = hold[prometheus.Counter](k, s.closed, protocol, route, ClosedDialError)
	for reason := range r.Closed {
		r.Closed[reason] = hold[prometheus.Counter](k, s.closed, protocol, route, proxy.CloseReason(reason).String())
	}
	// A Route made again while the series of a collected one lived on
	// (both held them a moment) goes on from its count.
	r.count.Store(Counter(r.identified))
	wp := weak.Make(r)
	s.routes[key] = wp
	runtime.AddCleanup(r, s.forget, routeRef{key, wp})
	return r
}

// routeRef names a Route in Stats.routes.
type routeRef struct {
	key [2]string
	wp  weak.Pointer[Route]
}

// forget drops a collected Route from s.routes, unless another Route of
// the same protocol and route has taken its place.
func (s *Stats) forget(ref routeRef) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.routes[ref.key] == ref.wp {
		delete(s.routes, ref.key)
	}
}

// Identified returns, per protocol of a Route still reachable (configured,
// or with connections draining), the connections identified as it (the
// sum over its routes).
func (s *Stats) Identified() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int64, len(s.routes))
	for _, wp := range s.routes {
		if r := wp.Value(); r != nil {
			out[r.protocol] += r.count.Load()
		}
	}
	return out
}

// CacheHitRate returns identification cache hits / lookups (0..1), 0
// before the first lookup.
func (s *Stats) CacheHitRate() float64 {
	lookups, hits := s.Cache.Load()
	if lookups == 0 {
		return 0
	}
	return float64(hits) / float64(lookups)
}

// Checked creates the protoplex_backend_up gauges of a route whose targets
// active health checks watch, at 1: the checks hold a target up from the
// start until as many checks as its fall setting fail in a row. Call it
// when the set goes live, before its first check. A route without checks
// gets no gauge: nothing watches its targets, and a value would say either
// "up" of a target nobody dialled or "down" for as long as nobody dials a
// target that failed once.
func (s *Stats) Checked(protocol, route string, targets []string) {
	for _, t := range targets {
		s.upGauge(protocol, route, t).Set(1)
	}
}

// upGauge returns the backend_up gauge of a route's target, recording the
// series for RetainTargets.
func (s *Stats) upGauge(protocol, route, target string) prometheus.Gauge {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.series[[3]string{protocol, route, target}] = true
	return s.backendUp.WithLabelValues(protocol, route, target)
}

// RetainTargets removes the backend_up series of every protocol, route and
// target not in live, so a scrape after a reload shows only the targets a
// route still checks.
func (s *Stats) RetainTargets(live map[[3]string]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.series {
		if !live[k] {
			s.backendUp.DeleteLabelValues(k[0], k[1], k[2])
			delete(s.series, k)
		}
	}
}

// DialObserver returns the function the backend set of a route calls after
// every dial (upstream.Options.DialDone): the dial duration and the
// failures by target. A dial says nothing of protoplex_backend_up: the
// health checks own it. The series it counts into are held by the
// function (held.go): they go once no backend set of the route and target
// can dial any more.
func (s *Stats) DialObserver(protocol, route string) func(target string, d time.Duration, err error) {
	o := &dials{vec: s.dialErrors, protocol: protocol, route: route, errs: map[string]prometheus.Counter{}}
	o.held = track(o, &s.holds)
	o.dur = hold[prometheus.Observer](o.held, s.dialDur, protocol, route)
	return o.observe
}

// dials is a backend set's dial observer.
type dials struct {
	held            *held
	dur             prometheus.Observer
	vec             *prometheus.CounterVec
	protocol, route string
	mu              sync.Mutex
	errs            map[string]prometheus.Counter // by target: bounded by the set's targets
}

func (o *dials) observe(target string, d time.Duration, err error) {
	o.dur.Observe(d.Seconds())
	if err == nil {
		return
	}
	o.mu.Lock()
	c, ok := o.errs[target]
	if !ok {
		c = hold[prometheus.Counter](o.held, o.vec, o.protocol, o.route, target)
		o.errs[target] = c
	}
	o.mu.Unlock()
	c.Inc()
}

// StateObserver returns the function the backend set of a route calls on
// every active health check transition (upstream.Options.StateChange).
func (s *Stats) StateObserver(protocol, route string) func(target string, up bool) {
	return func(target string, up bool) {
		v := 0.0
		if up {
			v = 1
		}
		s.upGauge(protocol, route, target).Set(v)
	}
}
