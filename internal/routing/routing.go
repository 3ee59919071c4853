// Package routing builds a manager's routing snapshot: the identification
// table of the configured protocols and, per route, where its connections
// go (a backend set, or an in-process handler) and its metrics. A snapshot
// is immutable; a reload builds the next one beside it, reusing the backend
// sets whose options did not change (their health state and warm pools
// survive), and swaps it in only when every part was built.
//
// It also tells the operator about routes (report.go): each route's label
// for logs, the routes a reload adds, removes and changes, and, for every
// backend set, failed dials (rate-limited) and health check transitions.
package routing

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/darkit/protoplex/internal/identify"
	"github.com/darkit/protoplex/internal/metrics"
	"github.com/darkit/protoplex/internal/upstream"
	"github.com/darkit/protoplex/protocols"
)

// Table is one routing snapshot. A connection keeps the snapshot it
// started with, so reloads never disturb it.
type Table struct {
	Identify *identify.Table
	Entries  []*Entry // by identify.Route.Index: the protocols' order
}

// Entry is one configured route: the protocol as the user gave it, where
// its connections go and its metrics.
type Entry struct {
	Proto *protocols.Protocol
	// Label names the route in logs and metrics: Label(Proto), followed by
	// "#n" for the nth route with the same label.
	Label   string
	Backend *upstream.Set // nil for in-process handlers
	Stats   *metrics.Route
}

// Plan is a snapshot built but not live yet: its fresh backend sets are not
// started, and the sets it would retire still serve.
type Plan struct {
	old, next *Table
	stats     *metrics.Stats
	fresh     []*Entry // with a backend set built for this plan
	unused    []*upstream.Set
}

// Build compiles protos into a plan, reusing old's backend sets where the
// backend options are unchanged. Nothing is started, closed or counted.
// The backend sets it builds log to log: failed dials at WARN (rate-limited
// per target) and health check transitions.
func Build(protos []*protocols.Protocol, cacheTTL time.Duration, old *Table, st *metrics.Stats, log *slog.Logger) (*Plan, error) {
	specs := make([]identify.RouteSpec, len(protos))
	for i, p := range protos {
		specs[i] = identify.RouteSpec{Spec: p.Spec(), Conditions: p.Conditions(), Priority: p.Priority, Fallback: p.Fallback}
	}
	table, err := identify.New(specs, cacheTTL, &st.Cache)
	if err != nil {
		return nil, err
	}
	reuse := map[backendKey]*upstream.Set{}
	if old != nil {
		for _, e := range old.Entries {
			if e.Backend != nil {
				reuse[keyOf(e)] = e.Backend
			}
		}
	}
	plan := &Plan{old: old, next: &Table{Identify: table, Entries: make([]*Entry, len(protos))}, stats: st}
	names := labels(protos)
	for i, p := range protos {
		e := &Entry{Proto: p, Label: names[i]}
		plan.next.Entries[i] = e
		if p.Handler != nil {
			continue
		}
		if b, ok := reuse[keyOf(e)]; ok {
			e.Backend = b
			delete(reuse, keyOf(e))
			continue
		}
		if e.Backend, err = newBackend(e, st, log); err != nil {
			plan.Discard()
			return nil, fmt.Errorf("protocol %q: %w", p.Name, err)
		}
		plan.fresh = append(plan.fresh, e)
	}
	for _, b := range reuse {
		plan.unused = append(plan.unused, b)
	}
	return plan, nil
}

// newBackend builds e's backend set, not started.
func newBackend(e *Entry, st *metrics.Stats, log *slog.Logger) (*upstream.Set, error) {
	p := e.Proto
	var targets []upstream.Target
	if p.Target != "" { // none: targets from etcd discovery only, before one registers
		var err error
		if targets, err = upstream.ParseTargets([]string{p.Target}); err != nil {
			return nil, err
		}
	}
	source, err := upstream.ParseSource(p.Source)
	if err != nil {
		return nil, err
	}
	return upstream.New(targets, upstream.Options{
		Strategy:    p.Balance,
		SendProxy:   p.SendProxy,
		DialDone:    logDials(p.Name, e.Label, st.DialObserver(p.Name, e.Label), log),
		StateChange: logStates(p.Name, e.Label, st.StateObserver(p.Name, e.Label), log),
		Health:      p.Health,
		Pool:        p.Pool,
		Source:      source,
		Transparent: p.Transparent,
	})
}

// Discard releases the sets a plan built and will never use.
func (plan *Plan) Discard() {
	for _, e := range plan.fresh {
		e.Backend.Close()
	}
}

// Commit makes the plan's snapshot ready to serve and returns it: metrics
// resolved, fresh sets started under ctx (with a backend_up gauge for
// every target their health checks watch), the sets no route uses any more
// closed — connections already dialed through them are not affected — and
// the backend_up series of every target no route of the snapshot checks
// removed. It cannot fail.
func (plan *Plan) Commit(ctx context.Context) *Table {
	for _, e := range plan.next.Entries {
		e.Stats = plan.stats.Route(e.Proto.Name, e.Label)
	}
	for _, e := range plan.fresh {
		if checked(e) {
			plan.stats.Checked(e.Proto.Name, e.Label, e.targets())
		}
		e.Backend.Start(ctx)
	}
	for _, b := range plan.unused {
		b.Close()
	}
	live := map[[3]string]bool{}
	for _, e := range plan.next.Entries {
		if checked(e) {
			for _, t := range e.targets() {
				live[[3]string{e.Proto.Name, e.Label, t}] = true
			}
		}
	}
	plan.stats.RetainTargets(live)
	return plan.next
}

// checked reports whether active health checks watch e's targets.
func checked(e *Entry) bool { return e.Backend != nil && e.Proto.Health.Interval > 0 }

// targets are the addresses of e's backend set.
func (e *Entry) targets() []string {
	var out []string
	for _, t := range e.Backend.Status() {
		out = append(out, t.Addr)
	}
	return out
}

// Close closes every backend set of t.
func (t *Table) Close() {
	for _, e := range t.Entries {
		if e.Backend != nil {
			e.Backend.Close()
		}
	}
}

// Pool sums the backend sets' figures.
func (t *Table) Pool() metrics.PoolMetrics {
	var m metrics.PoolMetrics
	for _, e := range t.Entries {
		if b := e.Backend; b != nil {
			m.ConnectionsCreated += b.Created()
			m.ConnectionsReused += b.Reused()
			m.Idle += b.Idle()
			m.HealthChecks += b.HealthChecks()
			for _, st := range b.Status() {
				m.Active += st.Active
			}
		}
	}
	return m
}

// Health is what the active health checks of one route find.
type Health struct {
	Name    string // the route's Label
	Up      int    // targets the checks find up and no operator holds (drain, maint)
	Checked int    // targets checked: 0 without active health checks or in-process
}

// Health reports each route of t, in configuration order.
func (t *Table) Health() []Health {
	out := make([]Health, len(t.Entries))
	for i, e := range t.Entries {
		out[i].Name = e.Label
		if e.Backend == nil || e.Proto.Health.Interval <= 0 {
			continue
		}
		for _, st := range e.Backend.Status() {
			out[i].Checked++
			if st.Up && st.Admin == upstream.Ready { // a drained target takes no connection
				out[i].Up++
			}
		}
	}
	return out
}

// Serviceable reports whether some route can take a connection: one served
// in-process, without active health checks (nothing says its targets are
// down), or with a target its checks find up.
func (t *Table) Serviceable() bool {
	for _, h := range t.Health() {
		if h.Checked == 0 || h.Up > 0 {
			return true
		}
	}
	return false
}

// backendKey is what makes two routes' backend sets interchangeable: the
// protocol name as given and the route's label are part of it, since a
// set's metrics and logs carry the names it was built with.
type backendKey struct {
	name, label, target, balance, sendProxy, source string
	pool                                            protocols.PoolConfig
	health                                          protocols.HealthConfig
	transparent                                     bool
}

func keyOf(e *Entry) backendKey {
	p := e.Proto
	return backendKey{
		name: p.Name, label: e.Label, target: p.Target, balance: p.Balance, sendProxy: p.SendProxy,
		source: strings.Join(p.Source, "\x00"), pool: p.Pool, health: p.Health,
		transparent: p.Transparent,
	}
}
