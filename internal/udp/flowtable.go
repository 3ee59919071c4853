package udp

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/darkit/protoplex/internal/guard"
	"github.com/darkit/protoplex/internal/ilist"
	"github.com/darkit/protoplex/internal/metrics"
)

// flowTable is one listener's flows and every decision about them: which
// flow a client address:port is, whether a new one may open (per-source
// cap, room in the table), which flow is evicted for room, what an
// undecided flow holds and when it is decided, and which flows are past
// their timeout. It holds no mutex, no socket and reads no clock: every
// method takes the time it runs at. One goroutine owns a table (the
// listener's reader today; an event loop can own one the same way), and
// the sockets of the flows it hands back are the caller's to close.
//
// The flow count and the bytes undecided flows hold are bounded across the
// tables of an engine by budgets they share, and the flows of each source
// (counted only while a per-source cap is on) by one shared count: a
// source's ports are spread over the sockets of one address.
type flowTable struct {
	flows   map[netip.AddrPort]*flow
	classes map[time.Duration]*lru
	// awaiting is the routed flows of request/response routes that have
	// not been looked at for a reply yet, oldest first (passive health).
	awaiting ilist.List[flow]
	sources  *sources // flows per source, shared
	count    *budget  // flows, shared by the engine's tables
	pending  *budget  // bytes held by undecided flows, shared
}

// sources counts the flows of each source across tables. Only new and
// ending flows touch it, and only while a per-source cap is on.
type sources struct {
	mu sync.Mutex
	n  map[netip.Addr]int
}

func newSources() *sources { return &sources{n: map[netip.Addr]int{}} }

func (s *sources) of(a netip.Addr) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n[a]
}

func (s *sources) add(a netip.Addr, d int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n[a] += d; s.n[a] <= 0 {
		delete(s.n, a)
	}
}

// budget is a bound shared by the tables of one engine: the only state
// their owners share, an atomic count.
type budget struct{ used atomic.Int64 }

// take adds n unless that would pass max; false then.
func (b *budget) take(n, max int) bool {
	if b.used.Add(int64(n)) > int64(max) {
		b.used.Add(-int64(n))
		return false
	}
	return true
}

func (b *budget) give(n int) { b.used.Add(-int64(n)) }

func (b *budget) load() int { return int(b.used.Load()) }

func newFlowTable(src *sources, count, pending *budget) *flowTable {
	return &flowTable{flows: map[netip.AddrPort]*flow{}, classes: map[time.Duration]*lru{}, sources: src, count: count, pending: pending,
		awaiting: ilist.New(func(f *flow) *ilist.Links[flow] { return &f.await })}
}

// len is the number of flows in this table.
func (t *flowTable) len() int { return len(t.flows) }

// lookup is client's flow, nil when it has none.
func (t *flowTable) lookup(client netip.AddrPort) *flow { return t.flows[client] }

// sourceFull reports whether client's source holds cap flows already (cap
// 0: no cap).
func (t *flowTable) sourceFull(client netip.AddrPort, cap int) bool {
	return cap > 0 && t.sources.of(sourceKey(client.Addr())) >= cap
}

// room takes a place for a new flow under max flows in all; false when
// the engine's tables hold max already (evict victim() and ask again).
func (t *flowTable) room(max int) bool { return t.count.take(1, max) }

// victim is the flow idle longest, the one to evict for room; nil when
// the table is empty.
func (t *flowTable) victim() *flow {
	var oldest *flow
	for _, l := range t.classes {
		if f := l.oldest(); f != nil && (oldest == nil || f.last.Load() < oldest.last.Load()) {
			oldest = f
		}
	}
	return oldest
}

// insert opens client's flow at now, in the place room took; counted in
// its source's flows when a per-source cap is on.
func (t *flowTable) insert(client netip.AddrPort, now time.Time, countSource bool, ticket guard.Ticket) *flow {
	f := &flow{client: client, start: now, ticket: ticket, counted: countSource}
	f.last.Store(now.UnixNano())
	t.flows[client] = f
	if countSource {
		t.sources.add(sourceKey(client.Addr()), 1)
	}
	return f
}

// remove takes f out of the table and gives back what it held; false
// when f is not in it (ended already).
func (t *flowTable) remove(f *flow) bool {
	if t.flows[f.client] != f {
		return false
	}
	delete(t.flows, f.client)
	if f.list != nil {
		f.list.remove(f)
	}
	if f.awaiting {
		t.awaiting.Remove(f)
		f.awaiting = false
	}
	if f.counted {
		t.sources.add(sourceKey(f.client.Addr()), -1)
	}
	t.release(f)
	t.count.give(1)
	return true
}

// release drops the datagrams f holds.
func (t *flowTable) release(f *flow) {
	t.pending.give(f.pendingN)
	f.pending, f.pendingN = nil, 0
}

// hold keeps b (copied) among f's datagrams, within MaxPendingBytes per
// flow and MaxPendingTotal in all; false when it does not fit.
func (t *flowTable) hold(f *flow, b []byte) bool {
	if f.pendingN+len(b) > MaxPendingBytes || !t.pending.take(len(b), MaxPendingTotal) {
		return false
	}
	f.pending = append(f.pending, append([]byte(nil), b...))
	f.pendingN += len(b)
	return true
}

// identify adds b (nil: none, the sweep's call) to undecided f's
// datagrams and decides what tb does with them at now: a route, or more
// (wait for the next datagram; f is queued for MaxWait), or neither, with
// the reason f is dropped. A datagram that would take f past its bounds
// decides f without it; final (MaxWait passed) never answers more.
func (t *flowTable) identify(f *flow, b []byte, tb *Table, now time.Time, final bool) (r *Route, more bool, why metrics.UDPRefusal) {
	if tb == nil {
		return nil, false, metrics.UDPNoMatch
	}
	if b != nil && !t.hold(f, b) {
		if len(f.pending) == 0 {
			return nil, false, metrics.UDPPendingFull
		}
		final = true
	}
	if len(f.pending) >= MaxDatagrams || now.Sub(f.start) >= MaxWait {
		final = true
	}
	r, more = tb.Decide(f.pending, final)
	switch {
	case more:
		if f.list == nil {
			t.class(MaxWait).push(f, f.start.UnixNano())
		}
	case r == nil && final && now.Sub(f.start) >= MaxWait:
		why = metrics.UDPTimeout
	case r == nil:
		why = metrics.UDPNoMatch
	}
	return r, more, why
}

// routed records that f forwards from now on, expiring after idle
// without a datagram either way; the datagrams it held are the caller's
// (taken before) and no longer count.
func (t *flowTable) routed(f *flow, idle time.Duration, now time.Time) {
	t.release(f)
	f.last.Store(now.UnixNano())
	t.class(idle).push(f, now.UnixNano())
}

// await queues routed f, from now, for a look at whether it got a reply.
func (t *flowTable) await(f *flow, now time.Time) {
	f.awaiting, f.awaitAt = true, now.UnixNano()
	t.awaiting.PushBack(f)
}

// unanswered is the next flow routed window or longer before now that got
// no reply meanwhile, taken off the awaiting list (so each is reported
// once); nil when there is none. Flows that did get one leave quietly.
func (t *flowTable) unanswered(now time.Time, window time.Duration) *flow {
	limit := now.Add(-window).UnixNano()
	for f := t.awaiting.Front(); f != nil && f.awaitAt <= limit; f = t.awaiting.Front() {
		t.awaiting.Remove(f)
		f.awaiting = false
		if f.dgDown.Load() == 0 && f.dgUp.Load() > 0 {
			return f
		}
	}
	return nil
}

// wait queues f, which waits for something other than a datagram (a
// dial), to be looked at again by due after MaxWait.
func (t *flowTable) wait(f *flow, now time.Time) { t.class(MaxWait).push(f, now.UnixNano()) }

// due is a flow past its timeout at now: a routed one idle for its idle
// timeout (to end), or an undecided one MaxWait after it began (to
// decide); nil when there is none. The caller removes or decides it
// before asking again.
func (t *flowTable) due(now time.Time) *flow {
	for d, l := range t.classes {
		if f := l.oldest(); f != nil && f.last.Load() <= now.Add(-d).UnixNano() {
			return f
		}
	}
	return nil
}

func (t *flowTable) class(d time.Duration) *lru {
	l := t.classes[d]
	if l == nil {
		l = newLRU()
		t.classes[d] = l
	}
	return l
}

// sourceKey is what the per-source cap counts: an IPv4 address, an IPv6
// /64.
func sourceKey(a netip.Addr) netip.Addr {
	if a.Is4() {
		return a
	}
	p, _ := a.Prefix(64)
	return p.Addr()
}
