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
	"unsafe"

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

// Table is an immutable, compiled set of routes. A new Table is built on every
// configuration change; connections keep the Table they started with.
type Table struct {
	routes      []*Route      // input order: routes[i].Index == i
	ranked      []*Route      // the order candidates are tried in
	buckets     [256][]*group // per first byte, by each group's best rank; includes wildcard routes
	candidates  [256]int      // routes per first byte
	serverFirst *Route        // best server-speaks-first route, chosen on silence
	fallback    *Route
	cache       *Cache
}

// group is the routes that share one protocol: the same detector,
// inspector and first bytes. Its detector and inspector run once per
// Evaluate, whatever the number of its routes, and its Index picks the
// conditional route that wins.
type group struct {
	detect     protocols.DetectFunc
	inspect    protocols.InspectFunc
	structural bool
	first      int      // rank of the best-ranked member
	uncond     *Route   // best-ranked member without conditions, or nil
	conds      []*Route // members with conditions, ranked: Index positions
	index      *Index
}

// groupKey tells which routes share a group (see funcID).
type groupKey struct {
	detect, inspect unsafe.Pointer
	structural      bool
	first           [4]uint64 // FirstBytes as a set; all bits for any byte
}

func keyOf(sp *protocols.Spec) groupKey {
	k := groupKey{detect: funcID(sp.Detect), inspect: funcID(sp.Inspect), structural: sp.Structural}
	if len(sp.FirstBytes) == 0 {
		k.first = [4]uint64{^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0)}
	}
	for _, b := range sp.FirstBytes {
		k.first[b/64] |= 1 << (b % 64)
	}
	return k
}

// New compiles routes. Candidates are tried most specific first (a
// protocol's Specificity plus 2 for SNI, 2 for Hosts and 1 for ALPN
// conditions), then by lower Priority, then in input order (see
// CompareRank). The routes hold at most MaxNames condition names in all,
// and one fallback per transport. The table keeps
// the specs' slices and functions, which must not change afterwards.
// cacheTTL 0 disables the identification cache; counters (may be nil)
// receive its lookups and hits.
func New(routes []RouteSpec, cacheTTL time.Duration, counters *CacheCounters) (*Table, error) {
	t := &Table{}
	names := 0
	var udpFallback *Route
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
		// Counted over every route, UDP ones included: the UDP table
		// indexes the same names.
		if names += len(rs.Conditions.SNI) + len(rs.Conditions.ALPN) + len(rs.Conditions.Hosts); names > MaxNames {
			return nil, fmt.Errorf("protocol %q: %d sni, alpn and host names in protocols 1 to %d, at most %d in all", sp.Name, names, i+1, MaxNames)
		}
		// One fallback per transport, as the UDP table takes the first.
		if rs.Fallback && sp.Transports&protocols.UDP != 0 {
			if udpFallback != nil {
				return nil, fmt.Errorf("protocol %q: %q is already the UDP fallback", sp.Name, udpFallback.Name)
			}
			udpFallback = r
		}
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
	slices.SortStableFunc(t.ranked, func(a, b *Route) int { return CompareRank(a.rankKey(), b.rankKey()) })
	groups := map[groupKey]*group{}
	var order []*group
	for i, r := range t.ranked {
		r.rank = i
		if r.spec.ServerFirst && t.serverFirst == nil {
			t.serverFirst = r
		}
		k := keyOf(&r.spec)
		g := groups[k]
		if g == nil {
			g = &group{detect: r.spec.Detect, inspect: r.spec.Inspect, structural: r.spec.Structural, first: i}
			groups[k] = g
			order = append(order, g)
			for b := range t.buckets {
				if k.first[b/64]&(1<<(b%64)) != 0 {
					t.buckets[b] = append(t.buckets[b], g)
				}
			}
		}
		for b := range t.candidates {
			if k.first[b/64]&(1<<(b%64)) != 0 {
				t.candidates[b]++
			}
		}
		switch {
		case r.hasConds:
			g.conds = append(g.conds, r)
		case g.uncond == nil:
			g.uncond = r
		}
	}
	for _, g := range order {
		if len(g.conds) > 0 {
			conds := make([]protocols.Conditions, len(g.conds))
			for i, r := range g.conds {
				conds[i] = r.conds
			}
			g.index = NewIndex(conds)
		}
	}
	if cacheTTL > 0 {
		t.cache = NewCache(cacheTTL, defaultCacheEntries, counters)
	}
	return t, nil
}

func (r *Route) rankKey() Rank {
	return Rank{Specificity: r.spec.Specificity, Keys: r.conds.Keys(), Priority: r.priority}
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
func (t *Table) Candidates(first byte) int { return t.candidates[first] }

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
// pure function of data (which is what makes the cache sound). The answer is
// the linear one: the best-ranked route that matches, Final when no route
// ranked above it still needs bytes; but routes that share a protocol share
// one run of its detector and inspector, and an Index picks among their
// conditions, so the cost grows with the number of protocols, not of routes
// or names.
func (t *Table) Evaluate(data []byte) Verdict {
	if len(data) == 0 {
		return Verdict{}
	}
	// need and needStruct are the best ranks that answered NeedMore (any;
	// structurally): only those above the winner count.
	var best *Route
	need, needStruct := noRank, noRank
	for _, g := range t.buckets[data[0]] {
		limit := noRank
		if best != nil {
			if g.first > best.rank {
				break // no route of this group or after ranks above best
			}
			limit = best.rank
		}
		m, n, structural := g.match(data, limit)
		if m != nil {
			best = m
		}
		need = min(need, n)
		if structural {
			needStruct = min(needStruct, n)
		}
	}
	if best == nil {
		return Verdict{Rejected: need == noRank, Structural: needStruct != noRank}
	}
	return Verdict{Best: best, Final: need > best.rank, Structural: needStruct < best.rank}
}

// noRank is above every rank.
const noRank = int(^uint(0) >> 1)

// match is what g's routes answer on data, among those ranked above limit:
// the best-ranked that matches (nil if none), and the best rank that
// answered NeedMore (noRank if none), structurally or not. A route's answer
// is its detector's, and for a route with conditions whose detector
// matched: NeedMore (structural) while the metadata is incomplete, else
// Match when its conditions accept the metadata, NoMatch otherwise.
func (g *group) match(data []byte, limit int) (best *Route, need int, structural bool) {
	switch g.detect(data) {
	case protocols.NeedMore:
		return nil, g.first, g.structural
	case protocols.NoMatch:
		return nil, noRank, false
	}
	if g.uncond != nil && g.uncond.rank < limit {
		best, limit = g.uncond, g.uncond.rank
	}
	if len(g.conds) == 0 || g.conds[0].rank > limit {
		return best, noRank, false
	}
	md, ok := g.inspect(data)
	if !ok {
		return best, g.conds[0].rank, true
	}
	// Index positions are ranked like the routes: the first position
	// ranked below limit bounds the search.
	bound, _ := slices.BinarySearchFunc(g.conds, limit, func(r *Route, l int) int { return r.rank - l })
	if i := g.index.Best(md, bound); i >= 0 {
		best = g.conds[i]
	}
	return best, noRank, false
}
