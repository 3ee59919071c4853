package udp

import (
	"net"
	"sync/atomic"
	"time"

	"github.com/darkit/protoplex/internal/guard"
	"github.com/darkit/protoplex/internal/ilist"
)

// flow is one client address:port on one listener.
type flow struct {
	key    flowKey
	start  time.Time
	ticket guard.Ticket
	last   atomic.Int64 // unix ns of the last datagram either way
	// counted: the flow counts in its source's flows (a per-source cap was
	// on when it began).
	counted bool

	// Undecided: the datagrams so far (first: queued in the MaxWait list).
	pending  [][]byte
	pendingN int
	first    bool

	// Routed: set once under the engine's lock, read-only afterwards.
	route  *Route
	rs     *routeState
	up     *net.UDPConn
	target string

	dgUp, dgDown, bytesUp, bytesDown atomic.Int64

	// The flow's place in its LRU list.
	list   *lru
	links  ilist.Links[flow]
	queued int64 // f.last when it was queued
}

// lru is the flows of one idle timeout, least recently queued first. A
// flow active since it was queued is moved to the back lazily, when it
// reaches the front, so a datagram never touches the list.
type lru struct{ flows ilist.List[flow] }

func newLRU() *lru {
	return &lru{flows: ilist.New(func(f *flow) *ilist.Links[flow] { return &f.links })}
}

func (l *lru) push(f *flow, at int64) {
	if f.list != nil {
		f.list.remove(f)
	}
	f.list, f.queued = l, at
	l.flows.PushBack(f)
}

func (l *lru) remove(f *flow) {
	l.flows.Remove(f)
	f.list = nil
}

// oldest returns the flow idle longest, requeueing the ones active since
// they were queued.
func (l *lru) oldest() *flow {
	for f := l.flows.Front(); f != nil; f = l.flows.Front() {
		last := f.last.Load()
		if last <= f.queued || f.up == nil {
			return f
		}
		l.push(f, last)
	}
	return nil
}
