package protoplex

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"

	"github.com/darkit/protoplex/internal/guard"
	"github.com/darkit/protoplex/internal/listen"
	"github.com/darkit/protoplex/internal/metrics"
	"github.com/darkit/protoplex/internal/monitor"
)

// Snapshot types of GetMetrics.
type (
	ProtocolManagerMetrics    = metrics.ProtocolManagerMetrics
	PoolMetrics               = metrics.PoolMetrics
	PoolOperationStats        = metrics.PoolOperationStats
	DetailedMemoryPoolMetrics = metrics.DetailedMemoryPoolMetrics
	// SecurityMetrics counts admissions and refusals.
	SecurityMetrics = guard.Metrics
)

// GetMetrics returns current metrics. It reads atomics only, and the Go
// heap figures from runtime/metrics (no stop-the-world); still, don't call
// it per connection.
func (pm *ProtocolManager) GetMetrics() ProtocolManagerMetrics {
	m := ProtocolManagerMetrics{ActiveConnections: int64(pm.conns.Len()), ConnectionPool: pm.pool()}
	m.Security = pm.guard.Metrics()
	metrics.ReadBuffers(&m.MemoryPool, pm.bufs)
	metrics.ReadRuntime(&m.MemoryPool)
	m.CacheHitRate = pm.stats.CacheHitRate()
	m.Identified = pm.stats.Identified()
	return m
}

// pool sums the live backend sets' figures.
func (pm *ProtocolManager) pool() PoolMetrics {
	if rt := pm.routing.Load(); rt != nil {
		return rt.Pool()
	}
	return PoolMetrics{}
}

// MetricsHandler returns the Prometheus handler of this manager's registry.
func (pm *ProtocolManager) MetricsHandler() http.Handler { return pm.stats.Handler() }

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
	_, err := pm.serveMonitor(metricsPort, addr)
	return err
}

// MetricsAddr returns the metrics listener's address, or "" when disabled.
func (pm *ProtocolManager) MetricsAddr() string {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	if m := pm.monitors[metricsPort]; m != nil {
		return m.Addr()
	}
	return ""
}

// ServeHealth serves /health/live and /health/ready (HealthHandler) on addr
// until Close, within the limits ServeMetrics states. It returns the bound
// address (useful with port 0).
func (pm *ProtocolManager) ServeHealth(addr string) (string, error) {
	return pm.serveMonitor(healthPort, addr)
}

// The monitoring servers a manager runs, by index in pm.monitors.
const metricsPort, healthPort = 0, 1

var monitorNames = [...]string{metricsPort: "metrics server", healthPort: "health server"}

// monitorRoles are the monitoring ports' roles in an upgrade's handover.
var monitorRoles = [...]string{metricsPort: listen.RoleMetrics, healthPort: listen.RoleHealth}

func (pm *ProtocolManager) serveMonitor(which int, addr string) (string, error) {
	h := pm.HealthHandler()
	if which == metricsPort {
		mux := http.NewServeMux()
		mux.Handle("/metrics", pm.MetricsHandler())
		st := pm.statusHandler()
		mux.Handle("/status", st)
		mux.Handle("/status.json", st)
		mux.Handle("/status.csv", st)
		mux.Handle("/status/", st)
		h = mux
	}
	pm.mu.Lock() // held while binding, so two calls cannot both start one
	defer pm.mu.Unlock()
	switch {
	case pm.closed:
		return "", ErrClosed
	case pm.monitors[which] != nil:
		return "", errors.New("protoplex: " + monitorNames[which] + " already running")
	}
	m, err := pm.monitorOn(which, addr, h)
	if err != nil {
		return "", fmt.Errorf("protoplex: %s listener: %w", monitorNames[which], err)
	}
	pm.monitors[which], pm.monitorAddrs[which] = m, addr
	if which == metricsPort {
		pm.statusBound(addr, m.Addr())
	}
	return m.Addr(), nil
}

// monitorOn serves h on the socket an upgrade handed over for addr, or
// binds addr.
func (pm *ProtocolManager) monitorOn(which int, addr string, h http.Handler) (*monitor.Server, error) {
	ln, ok, err := pm.inherited.Listener(monitorRoles[which], addr)
	if !ok {
		return monitor.Serve(addr, h, monitor.DefaultLimits())
	}
	if err != nil {
		return nil, fmt.Errorf("the socket handed over: %w", err)
	}
	return monitor.ServeListener(ln, h, monitor.DefaultLimits()), nil
}

// Ready reports whether this instance can serve: a listener is accepting,
// it is not draining, routes are configured, and at least one of them can
// take a connection. A route can when it is served in-process, has no active
// health checks (nothing says its targets are down), or has a target its
// checks find up; so one protocol whose backends are all down leaves the
// instance ready for the others (its state is in the metrics and in
// /health/ready?verbose), and only when every route's checks find every target down
// is it unready. A cluster node is also unready once its view of etcd is
// older than distributed.max_staleness. why says what is missing, or "ok".
func (pm *ProtocolManager) Ready() (ok bool, why string) {
	switch {
	case pm.Draining():
		return false, "draining"
	case !pm.Serving():
		return false, "not listening"
	}
	rt := pm.routing.Load()
	if rt == nil || len(rt.Entries) == 0 {
		return false, "no protocols configured"
	}
	if !rt.Serviceable() {
		return false, "no protocol has a healthy target"
	}
	if f := pm.cluster.Load(); f != nil {
		if ok, detail := (*f)(); !ok {
			return false, detail
		}
	}
	return true, "ok"
}

// HealthHandler serves /health/live (the process answers) and /health/ready
// (200 or 503 as Ready says, with its why). /health/ready?verbose (any
// value) adds the cluster's state on a cluster node ("cluster: etcd
// connected, last sync 0.4s ago"), and one line per route with active
// health checks, named as the metrics and the access log name it, such as
// "route SSH: 2/3 targets up" or "route TLS[sni=a.example]: 0/1 targets
// up"; the status stays Ready's.
func (pm *ProtocolManager) HealthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/health/live", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/health/ready", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		ok, why := pm.Ready()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, why)
		if !r.URL.Query().Has("verbose") {
			return
		}
		if f := pm.cluster.Load(); f != nil {
			_, detail := (*f)()
			fmt.Fprintln(w, detail)
		}
		rt := pm.routing.Load()
		if rt == nil {
			return
		}
		for _, h := range rt.Health() {
			if h.Checked > 0 {
				fmt.Fprintf(w, "route %s: %d/%d targets up\n", h.Name, h.Up, h.Checked)
			}
		}
	})
	return mux
}
