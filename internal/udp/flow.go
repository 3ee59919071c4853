package udp

import (
	"math"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/darkit/protoplex/internal/guard"
	"github.com/darkit/protoplex/internal/ilist"
	"github.com/darkit/protoplex/internal/upstream"
)

// A flow's states, in the order of its life.
type flowState uint8

const (
	stIdentifying flowState = iota // its datagrams are held until a route is decided
	stDialing                      // routed to a host-name target being resolved off the owner
	stRouted                       // forwarding through up
)

// flow is one client address:port on one listener. Its owner (the
// listener's reader) reads and writes every field but the atomics and
// those marked otherwise.
type flow struct {
	client netip.AddrPort
	start  time.Time
	ticket guard.Ticket
	state  flowState
	// counted: the flow counts in its source's flows (a per-source cap was
	// on when it began).
	counted bool

	// Identifying: the datagrams so far.
	pending  [][]byte
	pendingN int

	// Routed: set by the owner before the reply reader starts, read-only
	// afterwards; the reader reads them too.
	ln      *listener
	route   *Route
	rs      *routeState
	up      upConn
	release func() // the target's active count, from upstream.Plan.Done
	set     *upstream.Set
	att     upstream.Attempt // the target, for its passive health
	heard   bool             // a reply came: the target was told it answers (the reader's)

	last atomic.Int64 // unix ns of the last datagram either way
	// owed is the replies the flow awaits under its route's udp_responses
	// (n per datagram sent), answeredMark once the reader took the last one
	// and ended the flow; 0 without udp_responses.
	owed                             atomic.Int64
	dgUp, dgDown, bytesUp, bytesDown atomic.Int64

	// The flow's place in its LRU list.
	list   *lru
	links  ilist.Links[flow]
	queued int64 // f.last when it was queued

	// out: the flow is detached for a move to another process
	// (move_linux.go); a host-name dial's outcome that comes meanwhile
	// waits in outcome for the move's end: restored, the flow goes on with
	// it; moved, it is closed (the new process dials its own).
	out     bool
	outcome *dialOutcome

	// The flow's place among those awaiting their first reply.
	awaiting bool
	awaitAt  int64 // unix ns it was routed
	await    ilist.Links[flow]
}

// dialOutcome is what an off-owner dial of a host-name target gave (up
// nil: no target could be had).
type dialOutcome struct {
	r       *Route
	up      upConn
	set     *upstream.Set
	a       upstream.Attempt
	release func()
}

// drop closes what the outcome holds.
func (o *dialOutcome) drop() {
	if o.up != nil {
		o.up.Close()
		o.release()
	}
}

// answeredMark is flow.owed once the flow was answered: below any count.
const answeredMark = math.MinInt64 / 2

// expect adds n awaited replies, before a datagram is sent up; false when
// the flow was answered and ended already (the datagram begins the
// client's next flow). One compare-and-swap with replied: a datagram is
// either counted before the last reply is taken, or not sent on this flow.
func (f *flow) expect(n int) bool {
	for {
		v := f.owed.Load()
		if v < 0 {
			return false
		}
		if f.owed.CompareAndSwap(v, v+int64(n)) {
			return true
		}
	}
}

// replied takes one awaited reply; true when it was the last one owed:
// the flow is answered from then on, and the caller ends it.
func (f *flow) replied() bool {
	for {
		v := f.owed.Load()
		switch {
		case v < 0:
			return false
		case v <= 1:
			if f.owed.CompareAndSwap(v, answeredMark) {
				return true
			}
		case f.owed.CompareAndSwap(v, v-1):
			return false
		}
	}
}

// answered reports whether the reader ended f at its last awaited reply.
func (f *flow) answered() bool { return f.owed.Load() < 0 }

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

// oldest returns the flow idle longest, requeueing the routed ones active
// since they were queued.
func (l *lru) oldest() *flow {
	for f := l.flows.Front(); f != nil; f = l.flows.Front() {
		last := f.last.Load()
		if last <= f.queued || f.state != stRouted {
			return f
		}
		l.push(f, last)
	}
	return nil
}

// upConn is a flow's connected socket towards its target: a *net.UDPConn,
// or an *os.File on the socket dialDatagram made.
type upConn interface {
	Read(b []byte) (int, error)
	Write(b []byte) (int, error)
	Close() error
	SyscallConn() (syscall.RawConn, error)
}
