package protoplex

import (
	"fmt"
	"net/http"
)

// Ready reports whether the manager should receive traffic: a listener is
// accepting, it is not draining, and every protocol with active health checks
// has at least one healthy target. why says what is missing.
func (pm *ProtocolManager) Ready() (ok bool, why string) {
	switch {
	case pm.Draining():
		return false, "draining"
	case !pm.Serving():
		return false, "not listening"
	}
	rt := pm.routing.Load()
	if rt == nil || len(rt.table.Routes()) == 0 {
		return false, "no protocols configured"
	}
	for i, r := range rt.table.Routes() {
		b := rt.backends[i]
		if b == nil || r.Proto.Health.Interval <= 0 {
			continue
		}
		up := false
		for _, t := range b.Status() {
			up = up || t.Up
		}
		if !up {
			return false, fmt.Sprintf("protocol %s: no healthy target", r.Proto.Name)
		}
	}
	return true, "ok"
}

// HealthHandler serves /health/live (the process answers) and /health/ready
// (see Ready).
func (pm *ProtocolManager) HealthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/health/live", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/health/ready", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		ok, why := pm.Ready()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, why)
	})
	return mux
}

// ServeHealth serves the health probes on addr until Close, within the
// limits ServeMetrics states. It returns the bound address (useful with
// port 0).
func (pm *ProtocolManager) ServeHealth(addr string) (string, error) {
	return pm.serveHealthWith(addr, defaultMonitorLimits)
}

func (pm *ProtocolManager) serveHealthWith(addr string, lim monitorLimits) (string, error) {
	return pm.startMonitor(&pm.health, "health server", addr, pm.HealthHandler(), lim)
}
