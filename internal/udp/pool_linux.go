package udp

import (
	"net/netip"
	"time"

	"github.com/darkit/protoplex/internal/ilist"
)

// Bounds of a listener's pool of upstream sockets (on an event loop): a
// DNS flow that ended answered leaves its connected, still watched socket
// to the next flow to the same target, which then spends no socket(),
// connect(), epoll_ctl() nor close(). See upPool.
const (
	// MaxPooledSockets bounds the sockets one listener (one per CPU and
	// listen_udp address) keeps for reuse, all targets together; a socket
	// put in a full pool pushes out the one kept longest. They are
	// descriptors beside max_udp_flows' (which counts flows only).
	MaxPooledSockets = 256
	// PoolIdle is how long a pooled socket may wait for a flow: the sweep
	// closes it after.
	PoolIdle = 2 * time.Second
)

// upPool is one listener's reusable upstream sockets, per target, each
// taken oldest first (a socket waits as long as it can before its next
// flow). It is pure state owned by the listener's loop: it opens, reads
// and closes nothing; what it gives back to close, the caller closes.
//
// Only answered flows of DNS routes (udp_responses 1) put their socket
// here, and only while the table they were routed by is the current one:
// a reload (new table, maybe other targets) empties the pool.
type upPool struct {
	tb      *Table // the table whose routes' flows put the pooled sockets
	targets map[netip.AddrPort]*ilist.List[rawUp]
	all     ilist.List[rawUp] // every pooled socket, oldest first
	n       int
}

// pooled is a socket's place in its listener's pool.
type pooled struct {
	in              bool
	target          netip.AddrPort // the socket's peer
	since           int64          // unix ns it was put in
	byTarget, byAge ilist.Links[rawUp]
}

func newUpPool() *upPool {
	return &upPool{targets: map[netip.AddrPort]*ilist.List[rawUp]{},
		all: ilist.New(func(u *rawUp) *ilist.Links[rawUp] { return &u.reuse.pool.byAge })}
}

// len is the number of pooled sockets.
func (p *upPool) len() int { return p.n }

// take is a pooled socket connected to target, for a flow routed by tb;
// nil when there is none. A table other than the pool's empties it first
// (each socket comes back from stale, to close).
func (p *upPool) take(tb *Table, target netip.AddrPort) *rawUp {
	if tb != p.tb {
		return nil
	}
	l := p.targets[target]
	if l == nil {
		return nil
	}
	u := l.Front()
	if u != nil {
		p.remove(u)
	}
	return u
}

// put keeps u (a reusable socket, connected to its pool.target), from a
// flow routed by tb, at now;
// false when the pool does not take it (the table is no longer the pool's:
// the caller closes u). A full pool gives back the socket kept longest,
// for the caller to close.
func (p *upPool) put(tb *Table, u *rawUp, now time.Time) (ok bool, out *rawUp) {
	if tb != p.tb {
		return false, nil
	}
	if p.n >= MaxPooledSockets {
		out = p.all.Front()
		p.remove(out)
	}
	target := u.reuse.pool.target
	l := p.targets[target]
	if l == nil {
		nl := ilist.New(func(u *rawUp) *ilist.Links[rawUp] { return &u.reuse.pool.byTarget })
		l = &nl
		p.targets[target] = l
	}
	u.reuse.pool.in, u.reuse.pool.since = true, now.UnixNano()
	l.PushBack(u)
	p.all.PushBack(u)
	p.n++
	return true, out
}

// remove takes u out of the pool (a socket that failed while pooled).
func (p *upPool) remove(u *rawUp) {
	if !u.reuse.pool.in {
		return
	}
	l := p.targets[u.reuse.pool.target]
	l.Remove(u)
	if l.Front() == nil {
		delete(p.targets, u.reuse.pool.target)
	}
	p.all.Remove(u)
	u.reuse.pool.in = false
	p.n--
}

// stale is the next pooled socket to close at now, taken out: one idle
// past PoolIdle, or any once tb is not the pool's table (which tb then
// becomes); nil when none is left to close.
func (p *upPool) stale(tb *Table, now time.Time) *rawUp {
	u := p.all.Front()
	if u == nil {
		p.tb = tb
		return nil
	}
	if tb == p.tb && u.reuse.pool.since > now.Add(-PoolIdle).UnixNano() {
		return nil
	}
	p.remove(u)
	return u
}
