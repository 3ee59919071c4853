// Package identify is protoplex's identification engine: it decides, from the
// bytes a client sends first (or from its silence), which route serves the
// connection.
package identify

import (
	"fmt"
	"slices"
	"time"

	"github.com/darkit/protoplex/protocols"
)

// Route is one registered protocol, compiled for the engine.
type Route struct {
	Proto   *protocols.Protocol
	Index   int // position in the ranked order; also the tie-breaker
	detect  protocols.DetectFunc
	inspect protocols.InspectFunc
	conds   bool
	// structural: the detector's NeedMore ends when its protocol's framing
	// does (a Detect function: every built-in), so the decision may stay
	// open for it. Byte-pattern detectors (regexes, validators, windows)
	// may never decide; MinBytes and SettleWait bound them instead.
	structural bool
}

// match runs the detector and, on a Match, the route conditions. structural
// tells, for NeedMore, whether the wait is bounded by the protocol's framing:
// metadata still incomplete always is; a detector's NeedMore is when the
// detector is structural.
func (r *Route) match(data []byte) (res protocols.Result, structural bool) {
	res = r.detect(data)
	if res == protocols.NeedMore {
		return res, r.structural
	}
	if res != protocols.Match || !r.conds {
		return res, false
	}
	md, ok := r.inspect(data)
	if !ok {
		return protocols.NeedMore, true
	}
	if r.Proto.Accepts(md) {
		return protocols.Match, false
	}
	return protocols.NoMatch, false
}

// Table is an immutable, compiled set of routes. A new Table is built on every
// configuration change; connections keep the Table they started with.
type Table struct {
	routes      []*Route
	buckets     [256][]*Route // per first byte, ranked; includes wildcard routes
	serverFirst *Route        // best server-speaks-first route, chosen on silence
	fallback    *Route
	cache       *Cache
}

// NewTable compiles protocols in registration order. cacheTTL 0 disables the
// identification cache; counters (may be nil) receive its lookups and hits.
func NewTable(protos []*protocols.Protocol, cacheTTL time.Duration, counters *CacheCounters) (*Table, error) {
	t := &Table{}
	for i, p := range protos {
		if p == nil || p.Name == "" {
			return nil, fmt.Errorf("protocol #%d: no name", i+1)
		}
		r := &Route{Proto: p, detect: p.Detector(), inspect: p.Inspect, conds: p.HasConditions(), structural: p.Detect != nil}
		if r.conds && r.inspect == nil {
			return nil, fmt.Errorf("protocol %q: route conditions (sni/alpn/host) need a protocol that can inspect them", p.Name)
		}
		if p.Fallback {
			if t.fallback != nil {
				return nil, fmt.Errorf("protocol %q: %q is already the fallback", p.Name, t.fallback.Proto.Name)
			}
			t.fallback = r
		}
		r.Index = i
		t.routes = append(t.routes, r)
	}
	// Rank: more specific first (sub-protocols, conditional routes), then
	// lower Priority, then registration order. SortStableFunc keeps ties in
	// registration order deterministically.
	ranked := slices.Clone(t.routes)
	slices.SortStableFunc(ranked, func(a, b *Route) int {
		if sa, sb := specificity(a), specificity(b); sa != sb {
			return sb - sa
		}
		return a.Proto.Priority - b.Proto.Priority
	})
	for i, r := range ranked {
		r.Index = i
	}
	t.routes = ranked
	for _, r := range ranked {
		if r.Proto.ServerFirst() && t.serverFirst == nil {
			t.serverFirst = r
		}
		if len(r.Proto.FirstBytes) == 0 {
			for b := range t.buckets {
				t.buckets[b] = append(t.buckets[b], r)
			}
			continue
		}
		seen := [256]bool{}
		for _, b := range r.Proto.FirstBytes {
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
	s := r.Proto.Specificity
	if len(r.Proto.SNI) > 0 {
		s += 2
	}
	if len(r.Proto.Hosts) > 0 {
		s += 2
	}
	if len(r.Proto.ALPN) > 0 {
		s++
	}
	return s
}

// Routes returns the routes in ranked order.
func (t *Table) Routes() []*Route { return t.routes }

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
