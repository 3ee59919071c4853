package udp

import (
	"cmp"
	"math/bits"
	"slices"
	"time"

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
	Priority   int
	Fallback   bool
	// Targets are the backends, "host:port", taken in turn by new flows.
	Targets []string
	// IdleTimeout ends a flow after this long without a datagram either way.
	IdleTimeout time.Duration

	state *routeState
}

// Table ranks routes for identification: conditional routes first, then
// by priority (ascending), then configuration order, as for TCP.
type Table struct {
	routes   []*Route
	ranked   []*Route
	fallback *Route
}

// NewTable returns the table of routes (kept, not copied), counting in
// st.
func NewTable(routes []Route, st *metrics.UDP) *Table {
	t := &Table{}
	for i := range routes {
		r := &routes[i]
		r.state = &routeState{m: st.Route(r.Name)}
		t.routes = append(t.routes, r)
		if r.Fallback && t.fallback == nil {
			t.fallback = r
		}
	}
	t.ranked = slices.Clone(t.routes)
	slices.SortStableFunc(t.ranked, func(a, b *Route) int {
		if c := cmp.Compare(bits.OnesCount8(uint8(b.Conditions.Keys())), bits.OnesCount8(uint8(a.Conditions.Keys()))); c != 0 {
			return c
		}
		return cmp.Compare(a.Priority, b.Priority)
	})
	return t
}

// Routes returns the routes in configuration order.
func (t *Table) Routes() []*Route { return t.routes }

// Len is the number of routes.
func (t *Table) Len() int { return len(t.routes) }

// result is a route's answer on the datagrams so far, its conditions
// included: a Match whose metadata is not complete yet is NeedMore, one
// whose metadata fails a condition is NoMatch.
func (r *Route) result(dgs [][]byte) protocols.Result {
	res := r.Detect(dgs)
	if res != protocols.Match || r.Conditions.Keys() == 0 {
		return res
	}
	if r.Inspect == nil {
		return protocols.NoMatch
	}
	md, ok := r.Inspect(dgs)
	if !ok {
		return protocols.NeedMore
	}
	if !r.Conditions.Accepts(md) {
		return protocols.NoMatch
	}
	return protocols.Match
}

// Decide answers for a flow that sent dgs: the route when a Match ranks
// above every route still answering NeedMore; more when the flow must send
// another datagram first; neither when no route can take it. With final
// (the bounds are reached) it never answers more: the best Match wins,
// else the fallback route.
func (t *Table) Decide(dgs [][]byte, final bool) (r *Route, more bool) {
	var best *Route
	waiting := false
	for _, c := range t.ranked {
		if c.Detect == nil {
			continue
		}
		switch c.result(dgs) {
		case protocols.Match:
			if best == nil {
				best = c
			}
			if !waiting {
				return c, false
			}
		case protocols.NeedMore:
			if best == nil {
				waiting = true
			}
		}
	}
	if waiting && !final {
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
