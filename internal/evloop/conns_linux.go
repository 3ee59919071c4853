package evloop

import (
	"net"
	"net/netip"
	"time"

	"github.com/darkit/protoplex/internal/rawsys"
)

// Connections is a snapshot of at most limit (and at most MaxSnapshot) of
// the plane's connections, each loop's oldest first. Each loop copies its
// own under call, so nothing the loop owns is read elsewhere; it copies
// values only (no allocation, no string), and they are formatted here,
// off the loop. A stopped loop has none.
func (p *Plane) Connections(limit int) []ConnInfo {
	limit = min(limit, MaxSnapshot)
	var raw []connRaw
	for _, l := range p.loops {
		if len(raw) >= limit {
			break
		}
		_ = l.call(func() { raw = l.snapshot(raw, limit) })
	}
	if len(raw) == 0 {
		return nil
	}
	out := make([]ConnInfo, len(raw))
	for i := range raw {
		out[i] = raw[i].info()
	}
	return out
}

// connRaw is what a loop copies of one connection for Connections.
type connRaw struct {
	id            uint64
	st            state
	client        net.Addr // never changed once set: formatted off the loop
	backend       netip.AddrPort
	route, target string
	up, down      int64
	age           time.Duration
}

// snapshot appends the loop's connections to out until it holds limit.
func (l *Loop) snapshot(out []connRaw, limit int) []connRaw {
	for c := l.conns.Front(); c != nil && len(out) < limit; c = l.conns.Next(c) {
		if c.st == stDone {
			continue
		}
		r := connRaw{id: c.id, st: c.st, client: c.acc.Client, target: c.target, up: c.up.n, down: c.down.n, age: l.now.Sub(c.acc.Start)}
		if c.entry != nil {
			r.route = c.entry.Label
		}
		if c.hs != nil && c.target == "" {
			r.target = c.hs.att.Target // still dialing it
		}
		if c.bfd >= 0 {
			r.backend = rawsys.Peer(c.bfd, &l.sa)
		}
		if !r.backend.IsValid() && c.hs != nil {
			r.backend = c.hs.att.Addr // connecting to it
		}
		out = append(out, r)
	}
	return out
}

func (r *connRaw) info() ConnInfo {
	ci := ConnInfo{ID: r.id, State: r.st.String(), Route: r.route, Target: r.target, Up: r.up, Down: r.down, Age: r.age}
	if r.client != nil {
		ci.Client = r.client.String()
	}
	if r.backend.IsValid() {
		ci.Backend = r.backend.String()
	}
	return ci
}

func (s state) String() string {
	switch s {
	case stProxyHeader:
		return "proxy_header"
	case stIdentify:
		return "identifying"
	case stConnecting:
		return "connecting"
	case stDialing:
		return "dialing"
	case stReplay:
		return "replaying"
	case stForward:
		return "forwarding"
	case stHandover:
		return "moving"
	case stDone:
		return "done"
	}
	return "unknown"
}
