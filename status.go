package protoplex

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/darkit/protoplex/internal/metrics"
	"github.com/darkit/protoplex/internal/routing"
	"github.com/darkit/protoplex/internal/status"
	"github.com/darkit/protoplex/internal/upstream"
)

// Bounds of the status snapshot's lists (each is the first, or the
// largest, n; the totals are counted in full).
const (
	statusMaxBans        = 100
	statusMaxTopSources  = 20
	statusMaxConnections = 50
	// statusCacheFor: a snapshot is built at most this often, however many
	// clients poll; an action makes the next one fresh.
	statusCacheFor = 500 * time.Millisecond
	// statusSampleEvery: the rates' sampling period (metrics.RateWindow
	// samples make a minute).
	statusSampleEvery = time.Second
)

// statusState is what the status page needs beyond the counters.
type statusState struct {
	started time.Time
	rates   metrics.Rates
	token   atomic.Pointer[[]byte] // EnableAdmin's; nil: actions off
	bind    atomic.Pointer[bindAddr]
	cluster atomic.Pointer[func() metrics.ClusterState]
	config  atomic.Pointer[appliedConfig]
	sampler sync.Once
	stopped chan struct{} // closed when the sampler ends

	mu     sync.Mutex
	cached *metrics.Status
	at     time.Time
}

type bindAddr struct {
	host string
	port int
}

type appliedConfig struct{ file, hash string }

func newStatusState() *statusState {
	return &statusState{started: time.Now(), stopped: make(chan struct{})}
}

// hold is an operator's drain or maint of one target of one route; it is
// applied again to every routing snapshot a reload builds.
type hold struct{ route, target string }

// EnableAdmin turns on the status page's actions (drain, maint, ready a
// target; unban a source; close a connection), each a POST carrying token
// in the X-Protoplex-Token header. Call it before ServeMetrics. The token
// must be 16 to 4096 bytes; the CLI reads it from
// monitoring.admin_token_file or PROTOPLEX_ADMIN_TOKEN.
func (pm *ProtocolManager) EnableAdmin(token []byte) error {
	if n := len(token); n < status.MinTokenLen || n > status.MaxTokenLen {
		return fmt.Errorf("protoplex: admin token of %d bytes: want %d to %d", n, status.MinTokenLen, status.MaxTokenLen)
	}
	t := append([]byte(nil), token...)
	pm.status.token.Store(&t)
	return nil
}

// statusHandler serves the status page and its actions on the metrics
// port (internal/status).
func (pm *ProtocolManager) statusHandler() http.Handler {
	var token []byte
	if t := pm.status.token.Load(); t != nil {
		token = *t
	}
	return status.Handler(status.Config{
		Snapshot: pm.statusSnapshot,
		Actions:  statusActions{pm},
		Token:    token,
		Bind: func() (string, int) {
			if b := pm.status.bind.Load(); b != nil {
				return b.host, b.port
			}
			return "", -1
		},
		Log: pm.log,
	})
}

// statusBound records where the metrics port listens (the Host a status
// request must name) and starts sampling the rates.
func (pm *ProtocolManager) statusBound(configured, bound string) {
	host, _, _ := net.SplitHostPort(configured)
	_, p, _ := net.SplitHostPort(bound)
	port, _ := strconv.Atoi(p)
	pm.status.bind.Store(&bindAddr{host: host, port: port})
	pm.status.sampler.Do(func() { go pm.sampleRates() })
}

// sampleRates samples the route and target counters every second until
// the manager closes.
func (pm *ProtocolManager) sampleRates() {
	defer close(pm.status.stopped)
	t := time.NewTicker(statusSampleEvery)
	defer t.Stop()
	for {
		pm.status.rates.Add(time.Now(), pm.counters())
		select {
		case <-pm.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// stopStatus waits for the sampler, if it ran, to end (after pm.ctx).
func (pm *ProtocolManager) stopStatus() {
	ran := true
	pm.status.sampler.Do(func() { ran = false })
	if ran {
		<-pm.status.stopped
	}
}

// rateKeys names each route (its label; "#2" for a second with the same
// label) and each of its targets in the rate samples.
func rateKeys(rt *routing.Table, fn func(i int, route, key string)) {
	seen := map[string]int{}
	for i, e := range rt.Entries {
		seen[e.Label]++
		key := e.Label
		if n := seen[e.Label]; n > 1 {
			key += "#" + strconv.Itoa(n)
		}
		fn(i, e.Label, key)
	}
}

// counters reads every route's and target's counters for the rates.
func (pm *ProtocolManager) counters() map[string][]int64 {
	rt := pm.routing.Load()
	out := map[string][]int64{}
	if rt == nil {
		return out
	}
	rateKeys(rt, func(i int, _, key string) {
		e := rt.Entries[i]
		if e.Stats != nil {
			out["r\x00"+key] = []int64{e.Stats.Count(), metrics.Counter(e.Stats.Up), metrics.Counter(e.Stats.Down)}
		}
		if e.Backend != nil {
			for _, t := range e.Backend.Status() {
				out["t\x00"+key+"\x00"+t.Addr] = []int64{t.Served, t.DialErrors, t.BytesUp, t.BytesDown}
			}
		}
	})
	return out
}

// statusSnapshot returns the status snapshot /status.json serves (docs/status.md):
// built at most every half second, shared by every caller, never modified.
func (pm *ProtocolManager) statusSnapshot() *metrics.Status {
	st := pm.status
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.cached != nil && time.Since(st.at) < statusCacheFor {
		return st.cached
	}
	st.cached, st.at = pm.buildStatus(), time.Now()
	return st.cached
}

// statusChanged makes the next Status fresh.
func (pm *ProtocolManager) statusChanged() {
	pm.status.mu.Lock()
	pm.status.cached = nil
	pm.status.mu.Unlock()
}

func (pm *ProtocolManager) buildStatus() *metrics.Status {
	now := time.Now()
	s := &metrics.Status{SchemaVersion: metrics.SchemaVersion, GeneratedAt: now.UTC(), Admin: pm.status.token.Load() != nil}
	pm.statusTotals(&s.Totals, now)
	for _, a := range pm.Addrs() {
		transport := "tcp"
		switch a.(type) {
		case *net.UDPAddr:
			transport = "udp"
		case *net.UnixAddr:
			transport = "unix"
		}
		s.Listeners = append(s.Listeners, metrics.Listener{Transport: transport, Addr: a.String()})
	}
	if rt := pm.routing.Load(); rt != nil {
		s.Routes = pm.statusRoutes(rt, now)
	}
	for _, p := range sortedCounts(pm.stats.Identified()) {
		s.Identify.Matched = append(s.Identify.Matched, p)
	}
	s.Identify.Failures = pm.stats.IdentifyFailures()
	bans, total := pm.guard.Bans(statusMaxBans)
	s.Guard.BannedTotal, s.Guard.Tracked = total, pm.guard.Entries()
	for _, b := range bans {
		s.Guard.Banned = append(s.Guard.Banned, metrics.Ban{Source: b.Source.String(), Reason: b.Reason.String(), RemainingSeconds: b.Remaining.Seconds()})
	}
	for _, src := range pm.guard.TopSources(statusMaxTopSources) {
		s.Guard.TopSources = append(s.Guard.TopSources, metrics.Source{Source: src.Source.String(), Connections: src.Connections})
	}
	pm.stats.ReadProcess(&s.Totals)
	pm.stats.ReadUDP(&s.UDP)
	if fn := pm.status.cluster.Load(); fn != nil {
		s.Cluster = (*fn)()
		s.Cluster.Nodes = metrics.Counter(pm.stats.ClusterNodes)
	}
	for _, c := range pm.conns.List(statusMaxConnections) {
		lc := metrics.Conn{ID: c.ID, AgeSeconds: now.Sub(c.Since).Seconds()}
		if c.Client != nil {
			lc.Client = c.Client.String()
		}
		s.Connections.Listed = append(s.Connections.Listed, lc)
	}
	// Lists are [] in the JSON, never null: a client need not tell the two apart.
	s.Listeners, s.Routes = nonNil(s.Listeners), nonNil(s.Routes)
	for i := range s.Routes {
		r := &s.Routes[i]
		r.SNI, r.ALPN, r.Host, r.Targets = nonNil(r.SNI), nonNil(r.ALPN), nonNil(r.Host), nonNil(r.Targets)
	}
	s.Identify.Matched, s.Identify.Failures = nonNil(s.Identify.Matched), nonNil(s.Identify.Failures)
	s.Guard.Banned, s.Guard.TopSources = nonNil(s.Guard.Banned), nonNil(s.Guard.TopSources)
	s.UDP.Protocols, s.Connections.Listed = nonNil(s.UDP.Protocols), nonNil(s.Connections.Listed)
	s.Cluster.Members = nonNil(s.Cluster.Members)
	return s
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (pm *ProtocolManager) statusTotals(t *metrics.Totals, now time.Time) {
	t.Version = buildVersion()
	t.StartedAt = pm.status.started.UTC()
	t.UptimeSeconds = now.Sub(pm.status.started).Seconds()
	t.Active = int64(pm.conns.Len())
	t.Accepted = metrics.Counter(pm.stats.Accepted)
	t.MaxConnections = pm.settings.Load().MaxConnections
	t.Goroutines = int64(runtime.NumGoroutine())
	t.Draining = pm.Draining()
	heap := []rtmetrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	rtmetrics.Read(heap)
	if heap[0].Value.Kind() == rtmetrics.KindUint64 {
		t.HeapBytes = int64(heap[0].Value.Uint64())
	}
	if c := pm.status.config.Load(); c != nil {
		t.ConfigFile, t.ConfigHash = c.file, c.hash
	}
	var result string
	t.LastReloadAt, result, t.ReloadsOK, t.ReloadsFailed = pm.stats.LastReload()
	t.LastReloadResult = result
	if !t.LastReloadAt.IsZero() {
		t.LastReloadAt = t.LastReloadAt.UTC()
	}
}

func (pm *ProtocolManager) statusRoutes(rt *routing.Table, now time.Time) []metrics.RouteState {
	rates := &pm.status.rates
	out := make([]metrics.RouteState, len(rt.Entries))
	rateKeys(rt, func(i int, label, key string) {
		e := rt.Entries[i]
		p := e.Proto
		r := metrics.RouteState{Route: label, Protocol: p.Name, SNI: p.SNI, ALPN: p.ALPN, Host: p.Hosts, Balance: p.Balance, InProcess: p.Handler != nil}
		if e.Stats != nil {
			rk := "r\x00" + key
			r.Identified, r.BytesIn, r.BytesOut = e.Stats.Count(), metrics.Counter(e.Stats.Up), metrics.Counter(e.Stats.Down)
			r.ConnRate10s, r.ConnRate1m = rates.Rate(rk, 0, 10*time.Second), rates.Rate(rk, 0, time.Minute)
			r.BytesInRate10s, r.BytesInRate1m = rates.Rate(rk, 1, 10*time.Second), rates.Rate(rk, 1, time.Minute)
			r.BytesOutRate10s, r.BytesOutRate1m = rates.Rate(rk, 2, 10*time.Second), rates.Rate(rk, 2, time.Minute)
		}
		if e.Backend != nil {
			for _, t := range e.Backend.Status() {
				tk := "t\x00" + key + "\x00" + t.Addr
				ts := metrics.TargetState{Route: label, Protocol: p.Name, Target: t.Addr, Held: t.Admin != upstream.Ready,
					SinceSeconds: now.Sub(t.Since).Seconds(), Active: t.Active, Weight: t.Weight,
					Connections: t.Served, DialErrors: t.DialErrors, BytesIn: t.BytesUp, BytesOut: t.BytesDown,
					ConnRate10s: rates.Rate(tk, 0, 10*time.Second), ConnRate1m: rates.Rate(tk, 0, time.Minute),
					BytesInRate10s: rates.Rate(tk, 2, 10*time.Second), BytesInRate1m: rates.Rate(tk, 2, time.Minute),
					BytesOutRate10s: rates.Rate(tk, 3, 10*time.Second), BytesOutRate1m: rates.Rate(tk, 3, time.Minute)}
				ts.DialErrors1m, _ = rates.Delta(tk, 1, time.Minute)
				switch {
				case ts.Held:
					ts.State = t.Admin.String()
				case t.Up:
					ts.State = metrics.StateUp
				default:
					ts.State = metrics.StateDown
				}
				if t.Weight > 0 {
					ts.Load = float64(t.Active) / float64(t.Weight)
				}
				if !t.Check.At.IsZero() {
					ts.Check, ts.CheckDuration = "ok", t.Check.Duration.Seconds()
					if t.Check.Err != "" {
						ts.Check, ts.CheckError = "fail", t.Check.Err
					}
				}
				r.Targets = append(r.Targets, ts)
			}
		}
		out[i] = r
	})
	return out
}

func sortedCounts(m map[string]int64) []metrics.Count {
	out := make([]metrics.Count, 0, len(m))
	for k, v := range m {
		out = append(out, metrics.Count{Name: k, Count: v})
	}
	for i := 1; i < len(out); i++ { // a handful of protocols
		for j := i; j > 0 && out[j].Name < out[j-1].Name; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// buildVersion is the main module's version and VCS revision.
func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " (rev " + s.Value[:12] + ")"
		}
	}
	return v
}

// configApplied records the file and hash of the configuration applied.
func (pm *ProtocolManager) configApplied(cfg *Config) {
	b, _ := json.Marshal(cfg)
	sum := sha256.Sum256(b)
	pm.status.config.Store(&appliedConfig{file: cfg.Source, hash: hex.EncodeToString(sum[:6])})
}

// applyHoldsLocked holds again, in a routing snapshot just built, the
// targets an operator held, and forgets holds of targets no route has.
func (pm *ProtocolManager) applyHoldsLocked(rt *routing.Table) {
	if len(pm.holds) == 0 {
		return
	}
	live := map[hold]bool{}
	for _, e := range rt.Entries {
		if e.Backend == nil {
			continue
		}
		for _, t := range e.Backend.Status() {
			h := hold{e.Label, t.Addr}
			if a, ok := pm.holds[h]; ok {
				e.Backend.SetAdmin(t.Addr, a)
				live[h] = true
			}
		}
	}
	for h := range pm.holds {
		if !live[h] {
			delete(pm.holds, h)
		}
	}
}

// statusActions are the status page's actions on pm.
type statusActions struct{ pm *ProtocolManager }

// SetTarget holds target in every route labelled route (or, if none is,
// every route of that protocol name) in state; the hold outlives reloads.
func (a statusActions) SetTarget(route, target, state string) error {
	adm, ok := upstream.ParseAdmin(state)
	if !ok {
		return fmt.Errorf("state %q: want drain, maint or ready", state)
	}
	pm := a.pm
	pm.mu.Lock()
	defer pm.mu.Unlock()
	rt := pm.routing.Load()
	if rt == nil {
		return errors.New("no route configured")
	}
	match := func(byName bool) (n int) {
		for _, e := range rt.Entries {
			if e.Backend == nil || (!byName && e.Label != route) || (byName && !strings.EqualFold(e.Proto.Name, route)) {
				continue
			}
			if e.Backend.SetAdmin(target, adm) {
				n++
				h := hold{e.Label, target}
				if adm == upstream.Ready {
					delete(pm.holds, h)
				} else {
					if pm.holds == nil {
						pm.holds = map[hold]upstream.Admin{}
					}
					pm.holds[h] = adm
				}
			}
		}
		return n
	}
	if match(false) == 0 && match(true) == 0 {
		return fmt.Errorf("no route %q with target %q", route, target)
	}
	pm.statusChanged()
	return nil
}

func (a statusActions) Unban(addr netip.Addr) error {
	if !a.pm.guard.Unban(addr) {
		return fmt.Errorf("%s is not banned", addr)
	}
	a.pm.statusChanged()
	return nil
}

func (a statusActions) CloseConn(id uint64) error {
	if !a.pm.conns.Close(id) {
		return fmt.Errorf("no live connection %d", id)
	}
	a.pm.statusChanged()
	return nil
}

// SetClusterStatus is how cluster mode shows itself on the status page.
func (pm *ProtocolManager) setClusterStatus(fn func() metrics.ClusterState) {
	pm.status.cluster.Store(&fn)
}
