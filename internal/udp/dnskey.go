package udp

import (
	"encoding/binary"
	"hash/maphash"
)

// A DNS flow's upstream socket may be reused by the next flow to the same
// target (pool_linux.go), so a late or duplicate reply meant for an earlier
// flow can arrive on it. The guard: each query the flow sends records its
// queryKey, and a reply goes to the client only if its key is one the
// flow's queries recorded and not yet answered (queryGuard.answers).

// queryKey is what ties a DNS reply to its query: the message ID and a
// hash of the question section, ASCII letters folded to lower case (a
// server echoes the question; some change its case). The hash is seeded per
// engine: a sender who could guess the socket's port cannot pick a
// question that collides with another.
type queryKey struct {
	q  uint64
	id uint16
	// noQuestion: the message has no question (QDCOUNT 0), as an error
	// reply (FORMERR) to a query the server could not parse may have.
	noQuestion bool
}

// dnsMaxQuestions bounds the questions a key hashes; a query with more is
// not one the guard can follow (protocols' DNS detector takes at most 16).
const dnsMaxQuestions = 16

// dnsKey is the key of b, a DNS query or reply; false when b is not a DNS
// message whose header and questions are whole (the guard then refuses
// it). It reads at most b's header and question section and allocates
// nothing.
func dnsKey(b []byte, seed maphash.Seed) (queryKey, bool) {
	if len(b) < 12 {
		return queryKey{}, false
	}
	k := queryKey{id: binary.BigEndian.Uint16(b)}
	qd := int(binary.BigEndian.Uint16(b[4:6]))
	if qd == 0 {
		k.noQuestion = true
		return k, true
	}
	if qd > dnsMaxQuestions {
		return queryKey{}, false
	}
	var h maphash.Hash
	h.SetSeed(seed)
	var label [64]byte
	i := 12
	for range qd {
		for nameLen := 0; ; {
			if i >= len(b) {
				return queryKey{}, false
			}
			l := int(b[i])
			if l&0xc0 == 0xc0 { // a compression pointer ends the name: hashed as it is
				if i+2 > len(b) {
					return queryKey{}, false
				}
				h.Write(b[i : i+2])
				i += 2
				break
			}
			if l > 63 {
				return queryKey{}, false
			}
			if nameLen += l + 1; nameLen > 255 || i+1+l > len(b) {
				return queryKey{}, false
			}
			label[0] = byte(l)
			for j, c := range b[i+1 : i+1+l] {
				if 'A' <= c && c <= 'Z' {
					c += 'a' - 'A'
				}
				label[1+j] = c
			}
			h.Write(label[:1+l])
			i += 1 + l
			if l == 0 {
				break
			}
		}
		if i+4 > len(b) { // QTYPE, QCLASS
			return queryKey{}, false
		}
		h.Write(b[i : i+4])
		i += 4
	}
	k.q = h.Sum64()
	return k, true
}

// maxFlowQueries bounds the unanswered queries one flow's guard records: a
// query past it is dropped (protoplex_udp_dropped_total
// {reason="queries_outstanding"}). A DNS client waits for few answers on
// one port (dnsperf at most 100 by default, a resolver one).
const maxFlowQueries = 256

// queryGuard is the keys of a flow's unanswered queries (a multiset: a
// retransmitted query owes its reply twice). It lives with the upstream
// socket, so a pooled socket brings its capacity to the next flow and the
// guard allocates nothing once warm.
type queryGuard struct {
	on   bool // the flow's route reuses sockets: its replies are checked
	keys []queryKey
}

// ask records query b; false when the guard refuses it (not a DNS
// message, or maxFlowQueries unanswered already): it must not go up.
func (g *queryGuard) ask(b []byte, seed maphash.Seed) bool {
	k, ok := dnsKey(b, seed)
	if !ok || len(g.keys) >= maxFlowQueries {
		return false
	}
	g.keys = append(g.keys, k)
	return true
}

// answers reports whether reply b answers one of the recorded queries,
// and takes that one off: its ID and question match (a reply without a
// question matches by ID). Anything else is a late or duplicate reply of
// an earlier flow on the socket, or no reply at all.
func (g *queryGuard) answers(b []byte, seed maphash.Seed) bool {
	k, ok := dnsKey(b, seed)
	if !ok {
		return false
	}
	for i, q := range g.keys {
		if q.id == k.id && (q == k || k.noQuestion) {
			g.keys[i] = g.keys[len(g.keys)-1]
			g.keys = g.keys[:len(g.keys)-1]
			return true
		}
	}
	return false
}

// reset forgets every key, for the socket's next flow.
func (g *queryGuard) reset(on bool) { g.on, g.keys = on, g.keys[:0] }

// settled reports whether every recorded query was answered.
func (g *queryGuard) settled() bool { return len(g.keys) == 0 }
