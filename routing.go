package protoplex

import (
	"fmt"
	"strings"
	"time"

	"github.com/darkit/protoplex/internal/identify"
	"github.com/darkit/protoplex/internal/metrics"
	"github.com/darkit/protoplex/internal/upstream"
	"github.com/darkit/protoplex/protocols"
)

// routing is an immutable snapshot of the routes. A connection keeps the
// snapshot it started with, so reloads never disturb it.
type routing struct {
	table   *identify.Table
	entries []*entry // by identify.Route.Index
}

// entry is one configured route: the protocol as the user gave it, where
// its connections go and its metrics.
type entry struct {
	proto   *protocols.Protocol
	backend *upstream.Set // nil for in-process handlers
	stats   *metrics.Route
}

func (pm *ProtocolManager) rebuild() error {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	return pm.rebuildLocked()
}

// rebuildLocked compiles pm.protos into a new routing snapshot and swaps it
// in. Backend sets of unchanged targets are reused so health state and warm
// pools survive reloads.
func (pm *ProtocolManager) rebuildLocked() error {
	plan, err := pm.planRoutingLocked(pm.protos, pm.settings.Load().CacheTTL)
	if err != nil {
		return err
	}
	pm.commitRoutingLocked(plan)
	return nil
}

// routingPlan is a routing snapshot built but not live yet: its fresh
// backend sets are not started, and the sets it would retire still serve.
type routingPlan struct {
	next   *routing
	fresh  []*entry // with a backend set built for this plan
	unused []*upstream.Set
}

// planRoutingLocked builds the routing of protos without changing anything
// (no set started, none closed, no metric created).
func (pm *ProtocolManager) planRoutingLocked(protos []*protocols.Protocol, cacheTTL time.Duration) (*routingPlan, error) {
	specs := make([]identify.RouteSpec, len(protos))
	for i, p := range protos {
		specs[i] = identify.RouteSpec{Spec: p.Spec(), Conditions: p.Conditions(), Priority: p.Priority, Fallback: p.Fallback}
	}
	table, err := identify.New(specs, cacheTTL, &pm.stats.Cache)
	if err != nil {
		return nil, fmt.Errorf("protoplex: %w", err)
	}
	reuse := map[backendKey]*upstream.Set{}
	if old := pm.routing.Load(); old != nil {
		for _, e := range old.entries {
			if e.backend != nil {
				reuse[keyOf(e.proto)] = e.backend
			}
		}
	}
	plan := &routingPlan{next: &routing{table: table, entries: make([]*entry, len(protos))}}
	for i, p := range protos {
		e := &entry{proto: p}
		plan.next.entries[i] = e
		if p.Handler != nil {
			continue
		}
		if b, ok := reuse[keyOf(p)]; ok {
			e.backend = b
			delete(reuse, keyOf(p))
			continue
		}
		if e.backend, err = pm.newBackend(p); err != nil {
			plan.discard()
			return nil, fmt.Errorf("protoplex: protocol %q: %w", p.Name, err)
		}
		plan.fresh = append(plan.fresh, e)
	}
	for _, b := range reuse {
		plan.unused = append(plan.unused, b)
	}
	return plan, nil
}

// newBackend builds p's backend set, not started.
func (pm *ProtocolManager) newBackend(p *protocols.Protocol) (*upstream.Set, error) {
	targets, err := upstream.ParseTargets([]string{p.Target})
	if err != nil {
		return nil, err
	}
	source, err := upstream.ParseSource(p.Source)
	if err != nil {
		return nil, err
	}
	return upstream.New(targets, upstream.Options{
		Strategy:    p.Balance,
		SendProxy:   p.SendProxy,
		DialDone:    pm.stats.DialObserver(p.Name),
		StateChange: pm.stats.StateObserver(p.Name),
		Health:      p.Health,
		Pool:        p.Pool,
		Source:      source,
	})
}

// discard releases the sets a plan built and will never use.
func (plan *routingPlan) discard() {
	for _, e := range plan.fresh {
		e.backend.Close()
	}
}

// commitRoutingLocked makes plan the live routing. It cannot fail.
func (pm *ProtocolManager) commitRoutingLocked(plan *routingPlan) {
	for _, e := range plan.next.entries {
		e.stats = pm.stats.Route(e.proto.Name)
	}
	for _, e := range plan.fresh {
		var targets []string
		for _, t := range e.backend.Status() {
			targets = append(targets, t.Addr)
		}
		pm.stats.Targets(e.proto.Name, targets)
		e.backend.Start(pm.ctx)
	}
	pm.routing.Store(plan.next)
	// Sets no route uses any more stop their checks and pools; connections
	// already dialed through them are not affected.
	for _, b := range plan.unused {
		b.Close()
	}
}

// backendKey is what makes two protocols' backend sets interchangeable, so
// a reload that keeps a protocol's backend options keeps its set (health
// state, warm pool).
type backendKey struct {
	name, target, balance, sendProxy, source string
	pool                                     protocols.PoolConfig
	health                                   protocols.HealthConfig
}

func keyOf(p *protocols.Protocol) backendKey {
	return backendKey{
		name: strings.ToLower(p.Name), target: p.Target, balance: p.Balance, sendProxy: p.SendProxy,
		source: strings.Join(p.Source, "\x00"), pool: p.Pool, health: p.Health,
	}
}

// Backend figures summed over the live sets, for metrics and GetMetrics.
var (
	backendCreated = (*upstream.Set).Created
	backendReused  = (*upstream.Set).Reused
)

func (pm *ProtocolManager) sumBackends(f func(*upstream.Set) int64) func() int64 {
	return func() int64 {
		var n int64
		if rt := pm.routing.Load(); rt != nil {
			for _, e := range rt.entries {
				if e.backend != nil {
					n += f(e.backend)
				}
			}
		}
		return n
	}
}
