package identify

import (
	"strings"
	"unsafe"

	"github.com/darkit/protoplex/protocols"
)

// MaxNames bounds the route condition entries (sni, alpn and host names)
// of one table, all routes together: the index holds each one (about
// 60 bytes besides the name's own bytes, see BenchmarkIndexMemory), and a
// configuration reload builds it anew beside the live one.
const MaxNames = 100_000

// Rank is what orders routes that match the same bytes: the most specific
// first (the protocol's Specificity plus 2 for SNI, 2 for Host and 1 for
// ALPN conditions), then the lower Priority. Routes that rank equal keep
// their configuration order (sort stably). TCP (New) and UDP
// (internal/udp) rank by this one rule.
type Rank struct {
	Specificity int            // the protocol's (Spec.Specificity)
	Keys        protocols.Keys // the route's condition kinds
	Priority    int
}

// CompareRank is negative when a is tried before b, positive after, zero
// when they rank equal.
func CompareRank(a, b Rank) int {
	if sa, sb := a.specificity(), b.specificity(); sa != sb {
		return sb - sa
	}
	return a.Priority - b.Priority
}

func (r Rank) specificity() int {
	s := r.Specificity
	if r.Keys&protocols.SNIKey != 0 {
		s += 2
	}
	if r.Keys&protocols.HostKey != 0 {
		s += 2
	}
	if r.Keys&protocols.ALPNKey != 0 {
		s++
	}
	return s
}

// Index finds, among routes that share one protocol, the best-ranked whose
// conditions accept a first flight's metadata, in time that does not grow
// with the number of routes or names: exact names through a hash,
// "*.example.com" through a hash of suffixes (only the suffix lengths some
// pattern has are looked up), ALPN through a set. Names are normalised once,
// when it is built; a name or ALPN listed by several routes keeps them all,
// in rank order, so the rule of [Protocol.Accepts] and of rank is kept
// exactly (IndexMatchesLinear tests it against the linear scan).
//
// Each route is indexed by one key, its primary: SNI when it has one, else
// Host, else ALPN. Its other keys are checked on the routes the primary key
// finds, from per-route sets.
type Index struct {
	members   []member
	sni, host nameIndex
	alpn      map[string]uint32
	lists     [][]uint32 // routes of a name listed by more than one, ascending
	hosts     bool       // some route has Host conditions
}

// member is one route's conditions beyond its primary key.
type member struct {
	keys protocols.Keys
	alpn map[string]struct{} // when keys has ALPN and it is not the primary
	host *nameIndex          // when keys has both SNI and Host
}

// multi marks a posting that is an index into lists, not a route.
const multi = 1 << 31

// nameIndex is a set of exact names and "*." suffixes, each pointing to a
// posting (a route or a list of them).
type nameIndex struct {
	exact, wild map[string]uint32
	wildLens    []uint64 // bit n: some wildcard suffix is n bytes long
}

// NewIndex indexes conds, given in rank order: Best answers positions in
// conds. Conditions must not be empty.
func NewIndex(conds []protocols.Conditions) *Index {
	x := &Index{members: make([]member, len(conds))}
	for id, c := range conds {
		m := &x.members[id]
		m.keys = c.Keys()
		x.hosts = x.hosts || m.keys&protocols.HostKey != 0
		switch {
		case m.keys&protocols.SNIKey != 0:
			for _, n := range c.SNI {
				x.sni.add(x, n, uint32(id))
			}
			if m.keys&protocols.HostKey != 0 {
				m.host = &nameIndex{}
				for _, n := range c.Hosts {
					m.host.add(nil, n, 0)
				}
			}
		case m.keys&protocols.HostKey != 0:
			for _, n := range c.Hosts {
				x.host.add(x, n, uint32(id))
			}
		default:
			for _, a := range c.ALPN {
				x.alpn = addPosting(x, x.alpn, a, uint32(id))
			}
			continue
		}
		if len(c.ALPN) > 0 {
			m.alpn = make(map[string]struct{}, len(c.ALPN))
			for _, a := range c.ALPN {
				m.alpn[a] = struct{}{}
			}
		}
	}
	return x
}

// addPosting records that id lists key (ids come in ascending order).
// With x nil the map is a plain set.
func addPosting(x *Index, m map[string]uint32, key string, id uint32) map[string]uint32 {
	if m == nil {
		m = map[string]uint32{}
	}
	v, ok := m[key]
	switch {
	case !ok || x == nil:
		m[key] = id
	case v&multi != 0:
		l := &x.lists[v&^multi]
		if (*l)[len(*l)-1] != id {
			*l = append(*l, id)
		}
	case v != id:
		x.lists = append(x.lists, []uint32{v, id})
		m[key] = uint32(len(x.lists)-1) | multi
	}
	return m
}

// add indexes a name or "*." pattern as routeMatchName reads it: spaces
// and one trailing dot dropped, then a wildcard, else IPv6 brackets
// dropped; ASCII lower case. A pattern that can match nothing ("", "*.")
// is left out.
func (n *nameIndex) add(x *Index, pattern string, id uint32) {
	p := strings.TrimSuffix(strings.TrimSpace(pattern), ".")
	if suffix, ok := strings.CutPrefix(p, "*."); ok {
		if suffix == "" {
			return
		}
		n.wild = addPosting(x, n.wild, lower(suffix), id)
		if w := len(suffix) / 64; w >= len(n.wildLens) {
			n.wildLens = append(n.wildLens, make([]uint64, w+1-len(n.wildLens))...)
		}
		n.wildLens[len(suffix)/64] |= 1 << (len(suffix) % 64)
		return
	}
	if len(p) >= 2 && p[0] == '[' && p[len(p)-1] == ']' {
		p = p[1 : len(p)-1]
	}
	if p == "" {
		return
	}
	n.exact = addPosting(x, n.exact, lower(p), id)
}

// lower is ASCII lower case (see protocols.NormalizeName), without
// trimming: a name's spaces are part of it.
func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; c >= 'A' && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// clientName is a client's name as routeMatchName compares it: one
// trailing dot dropped, ASCII lower case; "" matches nothing.
func clientName(s string) string { return lower(strings.TrimSuffix(s, ".")) }

// wildLen reports whether some wildcard suffix is n bytes long.
func (n *nameIndex) wildLen(l int) bool {
	return l/64 < len(n.wildLens) && n.wildLens[l/64]&(1<<(l%64)) != 0
}

// has reports whether name (a clientName) is in the set.
func (n *nameIndex) has(name string) bool {
	if name == "" {
		return false
	}
	if _, ok := n.exact[name]; ok {
		return true
	}
	for i := 1; i+1 < len(name); i++ {
		if name[i] == '.' && n.wildLen(len(name)-i-1) {
			if _, ok := n.wild[name[i+1:]]; ok {
				return true
			}
		}
	}
	return false
}

// Len is the number of routes indexed.
func (x *Index) Len() int { return len(x.members) }

// Best returns the position of the best-ranked route whose conditions
// accept md, among those before limit; -1 when none does.
func (x *Index) Best(md protocols.Metadata, limit int) int {
	best := uint32(min(limit, len(x.members)))
	q := query{alpn: md.ALPN}
	if x.hosts {
		q.host = clientName(md.Host)
	}
	if x.sni.exact != nil || x.sni.wild != nil {
		best = x.byName(&x.sni, clientName(md.SNI), protocols.SNIKey, &q, best)
	}
	if x.host.exact != nil || x.host.wild != nil {
		best = x.byName(&x.host, q.host, protocols.HostKey, &q, best)
	}
	if x.alpn != nil {
		for _, a := range md.ALPN {
			if v, ok := x.alpn[a]; ok {
				best = x.scan(v, protocols.ALPNKey, &q, best)
			}
		}
	}
	if int(best) >= min(limit, len(x.members)) {
		return -1
	}
	return int(best)
}

// query is the metadata as the members' other conditions compare it: the
// client's host name normalised once per Best, not once per member tried.
type query struct {
	host string // clientName(md.Host), when some route has Host conditions
	alpn []string
}

// byName looks name up among exact names and wildcard suffixes (at most
// one lookup per suffix length in use).
func (x *Index) byName(n *nameIndex, name string, via protocols.Keys, q *query, best uint32) uint32 {
	if name == "" {
		return best
	}
	if v, ok := n.exact[name]; ok {
		best = x.scan(v, via, q, best)
	}
	if n.wild == nil {
		return best
	}
	// A wildcard needs a label before its suffix: a.example.com for
	// *.example.com, not example.com (routeMatchName: cut >= 2).
	for i := 1; i+1 < len(name); i++ {
		if name[i] == '.' && n.wildLen(len(name)-i-1) {
			if v, ok := n.wild[name[i+1:]]; ok {
				best = x.scan(v, via, q, best)
			}
		}
	}
	return best
}

// scan returns the first route of posting v, below best, whose other
// conditions hold (its primary, via, holds already); else best.
func (x *Index) scan(v uint32, via protocols.Keys, q *query, best uint32) uint32 {
	if v&multi == 0 {
		if v < best && x.members[v].rest(via, q) {
			return v
		}
		return best
	}
	for _, id := range x.lists[v&^multi] {
		if id >= best {
			break
		}
		if x.members[id].rest(via, q) {
			return id
		}
	}
	return best
}

// rest checks m's conditions other than via, its primary key.
func (m *member) rest(via protocols.Keys, q *query) bool {
	rest := m.keys &^ via
	if rest&protocols.HostKey != 0 && !m.host.has(q.host) {
		return false
	}
	if rest&protocols.ALPNKey != 0 {
		for _, a := range q.alpn {
			if _, ok := m.alpn[a]; ok {
				return true
			}
		}
		return false
	}
	return true
}

// funcID is the identity of a func value: the address of its closure (a
// func value points to one). Equal IDs are the same code over the same
// captured variables, so a pure detector answers alike for both and is run
// once; closures of one literal with other captures (two byte-pattern
// protocols) have other IDs and are not shared.
func funcID[F protocols.DetectFunc | protocols.InspectFunc | protocols.DatagramFunc | protocols.DatagramInspectFunc](f F) unsafe.Pointer {
	return *(*unsafe.Pointer)(unsafe.Pointer(&f))
}

// SameFunc reports whether a and b are the same func value (see funcID):
// routes whose detectors are the same can share one run of them.
func SameFunc[F protocols.DetectFunc | protocols.InspectFunc | protocols.DatagramFunc | protocols.DatagramInspectFunc](a, b F) bool {
	return funcID(a) == funcID(b)
}
