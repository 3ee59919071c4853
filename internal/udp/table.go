package udp

import (
	"slices"
	"time"

	"github.com/darkit/protoplex/internal/identify"
	"github.com/darkit/protoplex/internal/metrics"
	"github.com/darkit/protoplex/protocols"
)

// Identification bounds: a flow still undecided after MaxDatagrams
// datagrams or MaxWait since its first one is decided with what it has (the
// best match, else the fallback route, else it is dropped).
const (
	MaxDatagrams = 8
	MaxWait      = 2 * time.Second
	// MaxPendingBytes bounds what one undecided flow holds: a datagram that
	// would take it past this decides the flow without it.
	MaxPendingBytes = 16 << 10
)

// Route is one route as the UDP engine sees it.
type Route struct {
	Index int    // the route's position in the routing table
	Name  string // protocol name, for metrics and logs
	Label string // the route in logs
	// Detect is the datagram detector; Inspect extracts the metadata the
	// conditions are checked against (nil: the route has none).
	Detect     protocols.DatagramFunc
	Inspect    protocols.DatagramInspectFunc
	Conditions protocols.Conditions
	// Specificity is the protocol's (Spec.Specificity), for the rank.
	Specificity int
	Priority    int
	Fallback    bool
	// Targets are the backends, "host:port", taken in turn by new flows.
	Targets []string
	// IdleTimeout ends a flow after this long without a datagram either way.
	IdleTimeout time.Duration

	state *routeState
	rank  int // position in the order routes are tried
}

// Table ranks routes for identification as TCP does (identify.CompareRank:
// the most specific first, then by priority, then configuration order) and
// groups those that share a detector and inspector: each runs once per
// Decide, and an identify.Index picks among the group's conditions, so a
// flow's first datagrams are decrypted and parsed once, not once per route.
type Table struct {
	routes   []*Route
	groups   []*group // by the rank of their best member
	fallback *Route
}

// group is the routes that share one datagram detector and inspector.
type group struct {
	detect  protocols.DatagramFunc
	inspect protocols.DatagramInspectFunc
	first   int      // rank of the best member
	uncond  *Route   // best member without conditions, or nil
	conds   []*Route // members with conditions, ranked: index positions
	index   *identify.Index
}

// NewTable returns the table of routes (kept, not copied), counting in
// st. Only the first fallback is kept: identify.New, which builds the TCP
// table of the same routes, refuses a second on UDP.
func NewTable(routes []Route, st *metrics.UDP) *Table {
	t := &Table{}
	for i := range routes {
		r := &routes[i]
		r.state = &routeState{m: st.Route(r.Name), tb: t}
		t.routes = append(t.routes, r)
		if r.Fallback && t.fallback == nil {
			t.fallback = r
		}
	}
	ranked := slices.Clone(t.routes)
	slices.SortStableFunc(ranked, func(a, b *Route) int { return identify.CompareRank(a.rankKey(), b.rankKey()) })
	var g *group
	for i, r := range ranked {
		r.rank = i
		if r.Detect == nil {
			continue
		}
		g = nil
		for _, c := range t.groups {
			if identify.SameFunc(c.detect, r.Detect) && identify.SameFunc(c.inspect, r.Inspect) {
				g = c
				break
			}
		}
		if g == nil {
			g = &group{detect: r.Detect, inspect: r.Inspect, first: i}
			t.groups = append(t.groups, g)
		}
		switch {
		case r.Conditions.Keys() == 0:
			if g.uncond == nil {
				g.uncond = r
			}
		case r.Inspect != nil: // conditions without an inspector never hold
			g.conds = append(g.conds, r)
		}
	}
	for _, g := range t.groups {
		if len(g.conds) > 0 {
			conds := make([]protocols.Conditions, len(g.conds))
			for i, r := range g.conds {
				conds[i] = r.Conditions
			}
			g.index = identify.NewIndex(conds)
		}
	}
	return t
}

func (r *Route) rankKey() identify.Rank {
	return identify.Rank{Specificity: r.Specificity, Keys: r.Conditions.Keys(), Priority: r.Priority}
}

// Routes returns the routes in configuration order.
func (t *Table) Routes() []*Route { return t.routes }

// Len is the number of routes.
func (t *Table) Len() int { return len(t.routes) }

// noRank is above every rank.
const noRank = int(^uint(0) >> 1)

// match is what g's routes ranked above limit answer on the datagrams so
// far: the best that matches (nil if none) and the best rank that answered
// NeedMore (noRank if none). A route's answer is its detector's; for one
// with conditions whose detector matched, NeedMore while its metadata is
// incomplete, else Match when its conditions accept the metadata.
func (g *group) match(dgs [][]byte, limit int) (best *Route, need int) {
	switch g.detect(dgs) {
	case protocols.NeedMore:
		return nil, g.first
	case protocols.NoMatch:
		return nil, noRank
	}
	if g.uncond != nil && g.uncond.rank < limit {
		best, limit = g.uncond, g.uncond.rank
	}
	if len(g.conds) == 0 || g.conds[0].rank > limit {
		return best, noRank
	}
	md, ok := g.inspect(dgs)
	if !ok {
		return best, g.conds[0].rank
	}
	bound, _ := slices.BinarySearchFunc(g.conds, limit, func(r *Route, l int) int { return r.rank - l })
	if i := g.index.Best(md, bound); i >= 0 {
		best = g.conds[i]
	}
	return best, noRank
}

// Decide answers for a flow that sent dgs: the route when a Match ranks
// above every route still answering NeedMore; more when the flow must send
// another datagram first; neither when no route can take it. With final
// (the bounds are reached) it never answers more: the best Match wins,
// else the fallback route.
func (t *Table) Decide(dgs [][]byte, final bool) (r *Route, more bool) {
	var best *Route
	need := noRank
	for _, g := range t.groups {
		limit := noRank
		if best != nil {
			if g.first > best.rank {
				break
			}
			limit = best.rank
		}
		m, n := g.match(dgs, limit)
		if m != nil {
			best = m
		}
		need = min(need, n)
	}
	if !final && (best == nil && need != noRank || best != nil && need < best.rank) {
		return nil, true
	}
	if best != nil {
		return best, false
	}
	if t.fallback != nil && len(t.fallback.Targets) > 0 {
		return t.fallback, false
	}
	return nil, false
}
