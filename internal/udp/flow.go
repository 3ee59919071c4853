package udp

import (
	"net"
	"sync/atomic"
	"time"

	"github.com/darkit/protoplex/internal/guard"
)

// flow is one client address:port on one listener.
type flow struct {
	key    flowKey
	start  time.Time
	ticket guard.Ticket
	last   atomic.Int64 // unix ns of the last datagram either way

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
	list       *lru
	prev, next *flow
	queued     int64 // f.last when it was queued
}

// lru is the flows of one idle timeout, least recently queued first. A
// flow active since it was queued is moved to the back lazily, when it
// reaches the front, so a datagram never touches the list.
type lru struct{ head, tail *flow }

func (l *lru) push(f *flow, at int64) {
	if f.list != nil {
		f.list.remove(f)
	}
	f.list, f.queued, f.prev, f.next = l, at, l.tail, nil
	if l.tail != nil {
		l.tail.next = f
	} else {
		l.head = f
	}
	l.tail = f
}

func (l *lru) remove(f *flow) {
	if f.prev != nil {
		f.prev.next = f.next
	} else {
		l.head = f.next
	}
	if f.next != nil {
		f.next.prev = f.prev
	} else {
		l.tail = f.prev
	}
	f.list, f.prev, f.next = nil, nil, nil
}

// oldest returns the flow idle longest, requeueing the ones active since
// they were queued.
func (l *lru) oldest() *flow {
	for f := l.head; f != nil; f = l.head {
		last := f.last.Load()
		if last <= f.queued || f.up == nil {
			return f
		}
		l.push(f, last)
	}
	return nil
}
