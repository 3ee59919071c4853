// Package identify is protoplex's identification engine: it decides, from the
// bytes a client sends first (or from its silence), which route serves the
// connection.
//
// Its input is one RouteSpec per route: what the protocol is
// (protocols.Spec), the conditions its first flights must meet, a priority
// and the fallback mark. Where a connection then goes (targets, balancing,
// handlers) is the caller's: it keeps that per route, by Route.Index.
package identify

import (
	"fmt"
	"slices"
	"time"

	"github.com/darkit/protoplex/protocols"
)

// RouteSpec is the engine's input for one route: what the protocol is, the
// conditions its first flights must meet, and its rank. Where a matched
// connection goes is not the engine's concern: the caller keeps that per
// input position ([Route.Index]).
type RouteSpec struct {
	Spec       protocols.Spec
	Conditions protocols.Conditions
	// Priority orders routes matching the same bytes: lower first.
	Priority int
	// Fallback: the route takes connections no route matched.
	Fallback bool
}

// Route is one route compiled for the engine.
type Route struct {
	// Index is the route's position in the slice given to New.
	Index int
	// Name is the protocol's name (Spec.Name), for logs and metrics.
	Name string

	rank     int // position in the ranked order
	spec     protocols.Spec
	conds    protocols.Conditions
	hasConds bool
	priority int
}

// ServerFirst reports whether the route's protocol is chosen on silence.
func (r *Route) ServerFirst() bool { return r.spec.ServerFirst }

// Rank is the route's position in the order candidates are tried (see New);
// -1 for a route not on TCP, which a stream never tries.
func (r *Route) Rank() int { return r.rank }

// match runs the detector and, on a Match, the route conditions. structural
// tells, for NeedMore, whether the wait is bounded by the protocol's framing:
// metadata still incomplete always is; a detector's NeedMore is when the
// detector is structural (Spec.Structural).
func (r *Route) match(data []byte) (res protocols.Result, structural bool) {
	res = r.spec.Detect(data)
	if res == protocols.NeedMore {
		return res, r.spec.Structural
	}
	if res != protocols.Match || !r.hasConds {
		return res, false
	}
	md, ok := r.spec.Inspect(data)
	if !ok {
		return protocols.NeedMore, true
	}
	if r.conds.Accepts(md) {
		return protocols.Match, false
	}
	return protocols.NoMatch, false
}

// Table is an immutable, compiled set of routes. A new Table is built on every
// configuration change; connections keep the Table they started with.
type Table struct {
	routes      []*Route      // input order: routes[i].Index == i
	ranked      []*Route      // the order candidates are tried in
	buckets     [256][]*Route // per first byte, ranked; includes wildcard routes
	serverFirst *Route        // best server-speaks-first route, chosen on silence
	fallback    *Route
	cache       *Cache
}

// New compiles routes. Candidates are tried most specific first (a
// protocol's Specificity plus 2 for SNI, 2 for Hosts and 1 for ALPN
// conditions), then by lower Priority, then in input order. The table keeps
// the specs' slices and functions, which must not change afterwards.
// cacheTTL 0 disables the identification cache; counters (may be nil)
// receive its lookups and hits.
func New(routes []RouteSpec, cacheTTL time.Duration, counters *CacheCounters) (*Table, error) {
	t := &Table{}
	for i, rs := range routes {
		sp := rs.Spec
		if sp.Name == "" {
			return nil, fmt.Errorf("protocol #%d: no name", i+1)
		}
		if sp.Detect == nil {
			return nil, fmt.Errorf("protocol %q: no detector", sp.Name)
		}
		r := &Route{Index: i, Name: sp.Name, spec: sp, conds: rs.Conditions, hasConds: rs.Conditions.Keys() != 0, priority: rs.Priority, rank: -1}
		t.routes = append(t.routes, r)
		if sp.Transports != 0 && sp.Transports&protocols.TCP == 0 {
			continue // a UDP-only route: never a candidate, the fallback or the silence choice of a stream
		}
		if r.hasConds && sp.Inspect == nil {
			return nil, fmt.Errorf("protocol %q: route conditions (sni/alpn/host) need a protocol that can inspect them", sp.Name)
		}
		if rs.Fallback {
			if t.fallback != nil {
				return nil, fmt.Errorf("protocol %q: %q is already the fallback", sp.Name, t.fallback.Name)
			}
			t.fallback = r
		}
		t.ranked = append(t.ranked, r)
	}
	// SortStableFunc keeps ties in input order deterministically.
	slices.SortStableFunc(t.ranked, func(a, b *Route) int {
		if sa, sb := specificity(a), specificity(b); sa != sb {
			return sb - sa
		}
		return a.priority - b.priority
	})
	for i, r := range t.ranked {
		r.rank = i
		if r.spec.ServerFirst && t.serverFirst == nil {
			t.serverFirst = r
		}
		if len(r.spec.FirstBytes) == 0 {
			for b := range t.buckets {
				t.buckets[b] = append(t.buckets[b], r)
			}
			continue
		}
		seen := [256]bool{}
		for _, b := range r.spec.FirstBytes {
			if !seen[b] {
				seen[b] = true
				t.buckets[b] = append(t.buckets[b], r)
			}
		}
	}
	if cacheTTL > 0 {
		t.cache = NewCache(cacheTTL, defaultCacheEntries, counters)
	}
	return t, nil
}

func specificity(r *Route) int {
	s := r.spec.Specificity
	k := r.conds.Keys()
	if k&protocols.SNIKey != 0 {
		s += 2
	}
	if k&protocols.HostKey != 0 {
		s += 2
	}
	if k&protocols.ALPNKey != 0 {
		s++
	}
	return s
}

// Routes returns the routes in input order: Routes()[i].Index == i.
func (t *Table) Routes() []*Route { return t.routes }

// Ranked returns the routes in the order candidates are tried.
func (t *Table) Ranked() []*Route { return t.ranked }

// Fallback returns the fallback route or nil.
func (t *Table) Fallback() *Route { return t.fallback }

// ServerFirst returns the route chosen on client silence, or nil.
func (t *Table) ServerFirst() *Route { return t.serverFirst }

// Cache returns the identification cache (nil when disabled).
func (t *Table) Cache() *Cache { return t.cache }

// Candidates returns how many routes are tried for a first byte.
func (t *Table) Candidates(first byte) int { return len(t.buckets[first]) }

// Verdict is the engine's view of a buffer.
type Verdict struct {
	Best  *Route // highest-ranked matching route, or nil
	Final bool   // Best is certain: no higher-ranked route still needs more bytes
	// Rejected: every candidate said NoMatch; more bytes cannot help.
	Rejected bool
	// Structural: a route ranked above Best (any route, when Best is nil)
	// still needs bytes to complete its protocol's framing (a TLS record or
	// handshake message, an HTTP header block). The decision stays open
	// until that completes, the buffer is full or the deadline passes;
	// MinBytes and SettleWait do not cut it short.
	Structural bool
}

// Evaluate runs the candidates for data's first byte in rank order. It is a
// pure function of data (which is what makes the cache sound).
func (t *Table) Evaluate(data []byte) Verdict {
	if len(data) == 0 {
		return Verdict{}
	}
	pending, structural := false, false
	for _, r := range t.buckets[data[0]] {
		switch res, st := r.match(data); res {
		case protocols.Match:
			return Verdict{Best: r, Final: !pending, Structural: structural}
		case protocols.NeedMore:
			pending = true
			structural = structural || st
		}
	}
	return Verdict{Rejected: !pending, Structural: structural}
}
