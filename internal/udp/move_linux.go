package udp

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/darkit/protoplex/internal/guard"
	"github.com/darkit/protoplex/internal/handover"
	"github.com/darkit/protoplex/internal/metrics"
	"github.com/darkit/protoplex/internal/rawsys"
	"golang.org/x/sys/unix"
)

// Moving the event loops' flows to another process (a binary upgrade).
//
// The listening sockets moved first, every socket of an address in its
// order, and the new process holds them unread (Hold). The old process
// then stops reading its listeners (PauseListeners): from there on a
// client's datagrams wait in the sockets' queues, read by neither. Each
// loop takes its flows out of its tables (DetachFlows): a routed flow's
// upstream socket leaves the loop's epoll and goes with the flow's state,
// so the backend keeps seeing the same source port; a flow still
// identifying (or resolving a host-name target) goes as the datagrams it
// was given, in a pipe (a lookup under way is abandoned: its outcome, if
// it comes while the flow is out, waits for the move's end). The new
// process checks each batch whole (PrepareFlows) and says it can take it;
// the old one commits it; the new one takes each flow into the table of
// the loop that reads its socket, unread (Hold), says so, and reads them
// (Start); on that word the old one closes its copies without counting an
// end or writing a log line (MovedFlows). On anything else the old
// process puts them back (RestoreFlows) and the new one closes what it
// held (Discard). The new process reads its listeners once the phase ends
// (Release). Flows of listeners without a loop (the goroutine data plane)
// do not move: they drain in the old process.

// Bounds this package's flows keep within what a FlowState may carry.
const (
	_ = uint(handover.MaxFlowDatagrams - MaxDatagrams)
	_ = uint(handover.MaxFlowPending - MaxPendingBytes)
	_ = uint(handover.MaxFlowSockets - maxSockets)
)

// FlowBatch is flows detached from their loops, ready to send: Msg and
// FDs go together to handover.Conn.Send.
type FlowBatch struct {
	Msg   handover.Message
	FDs   []int
	flows []*moving
}

// Len is how many flows the batch holds.
func (b *FlowBatch) Len() int { return len(b.flows) }

// moving is one detached flow, as its loop needs it back.
type moving struct {
	ln       *listener
	f        *flow
	fd       int           // the upstream socket, or the read end of the pipe of an identifying flow's datagrams
	pending  [][]byte      // an identifying flow's datagrams
	idle     time.Duration // a routed flow's idle timeout
	awaiting bool          // it was awaiting its first reply (remove forgets it)
}

// loopListeners is the engine's listeners run by a loop.
func (e *Engine) loopListeners() []*listener {
	e.mu.Lock()
	defer e.mu.Unlock()
	return onLoops(e.lns)
}

// onLoops is a copy of those of lns a loop runs.
func onLoops(lns []*listener) []*listener {
	return slices.DeleteFunc(slices.Clone(lns), func(ln *listener) bool { return ln.drv == nil })
}

// PauseListeners stops the loops reading the listening sockets: what
// comes meanwhile waits in their queues.
func (e *Engine) PauseListeners() {
	for _, ln := range e.loopListeners() {
		ln.call(func() {
			if d := ln.drv; !d.paused && !d.stopped {
				ln.flushSends() // batched replies go before the flows move
				d.lp.Unwatch(d.fd)
				d.paused = true
				ln.emptyPool() // pooled sockets do not move
			}
		})
	}
}

// ResumeListeners reads the listening sockets again, after a move that
// did not happen (the new process refused or went away).
func (e *Engine) ResumeListeners() {
	for _, ln := range e.loopListeners() {
		ln.call(func() {
			if d := ln.drv; d.paused && !d.stopped {
				if err := d.lp.Watch(d.fd, ln.readable); err != nil {
					e.opt.Log.Error("udp listener cannot rejoin its event loop", "addr", ln.addr, "err", err)
					return
				}
				d.paused = false
			}
		})
	}
}

// DetachFlows takes flows off the loops, at most maxFDs (≤
// handover.MaxFDsPerMessage) of them; nil when none is left to move. A
// flow that cannot move (it ends meanwhile, or its datagrams cannot be
// put in a pipe) stays, and drains here.
func (e *Engine) DetachFlows(maxFDs int) *FlowBatch {
	b := &FlowBatch{Msg: handover.Message{Kind: handover.Flows}}
	maxFDs = min(maxFDs, handover.MaxFDsPerMessage)
	for _, ln := range e.loopListeners() {
		if len(b.FDs) >= maxFDs {
			break
		}
		ln.call(func() { ln.detach(b, maxFDs) })
	}
	if len(b.flows) == 0 {
		return nil
	}
	return b
}

// MovedFlows: the new process adopted the batch; the loops close their
// copies, and the flows end here without a count or a log line.
func (e *Engine) MovedFlows(b *FlowBatch) { each(b, (*listener).moved) }

// RestoreFlows: the batch did not move; its flows go on here.
func (e *Engine) RestoreFlows(b *FlowBatch) { each(b, (*listener).restore) }

// each runs fn for every flow of b, on its listener's loop.
func each(b *FlowBatch, fn func(*listener, *moving)) {
	byLn := map[*listener][]*moving{}
	for _, m := range b.flows {
		byLn[m.ln] = append(byLn[m.ln], m)
	}
	for ln, ms := range byLn {
		if !ln.call(func() {
			for _, m := range ms {
				fn(ln, m)
			}
		}) {
			// The loop stopped: nothing else touches these now.
			for _, m := range ms {
				fn(ln, m)
			}
		}
	}
}

// detach moves the listener's flows into b while they fit; on its loop.
func (ln *listener) detach(b *FlowBatch, maxFDs int) {
	d := ln.drv
	if d.stopped {
		return
	}
	ln.flushSends() // a flow's replies are sent and counted before its state is taken
	now := ln.e.now()
	socket := max(slices.Index(ln.head.group, ln), 0)
	for _, f := range ln.t.flows {
		if len(b.FDs) >= maxFDs {
			return
		}
		if d.stay[f] {
			continue
		}
		m, st, err := ln.detachFlow(f, now)
		if err == nil {
			st.Listen, st.Socket = ln.addr, socket
			err = handover.AppendFlow(&b.Msg, st)
			if err != nil {
				ln.restore(m)
			}
			if errors.Is(err, handover.ErrFull) && len(b.flows) > 0 {
				return // it goes in the next batch
			}
		}
		if err != nil {
			ln.e.opt.Log.Warn("upgrade: a udp flow cannot move, it drains here", "client", f.client.String(), "err", err)
			if d.stay == nil {
				d.stay = map[*flow]bool{}
			}
			d.stay[f] = true
			continue
		}
		b.FDs = append(b.FDs, m.fd)
		b.flows = append(b.flows, m)
	}
}

// detachFlow takes f out of the table and describes it: a routed flow
// with its upstream socket, off the loop's epoll; an undecided one with a
// pipe holding its datagrams.
func (ln *listener) detachFlow(f *flow, now time.Time) (*moving, handover.FlowState, error) {
	st := handover.FlowState{Client: f.client.String(), Age: max(now.Sub(f.start), 0),
		IdleFor: max(now.Sub(time.Unix(0, f.last.Load())), 0)}
	m := &moving{ln: ln, f: f}
	if f.state != stRouted {
		if len(f.pending) == 0 {
			return nil, st, errors.New("no datagram held")
		}
		fd, err := pipeOf(f.pending)
		if err != nil {
			return nil, st, err
		}
		m.fd, m.pending = fd, f.pending
		f.out = true // a dial under way keeps its outcome for restore
		st.Identifying = true
		for _, p := range f.pending {
			st.Pending = append(st.Pending, len(p))
		}
		ln.remove(f)
		return m, st, nil
	}
	if f.answered() {
		return nil, st, errors.New("answered: it ends here")
	}
	up := f.up.(*rawUp)
	m.fd, m.idle, m.awaiting = int(up.fd), ln.t.idleOf(f), f.awaiting
	st.Protocol, st.Route, st.Target = f.route.Name, f.route.Label, f.att.Target
	st.Responses, st.Owed = f.rs.responses, max(f.owed.Load(), 0)
	st.Heard, st.Awaiting, st.Idle = f.heard, f.awaiting, m.idle
	if f.awaiting {
		st.AwaitFor = max(now.Sub(time.Unix(0, f.awaitAt)), 0)
	}
	st.DgUp, st.DgDown, st.BytesUp, st.BytesDown = f.dgUp.Load(), f.dgDown.Load(), f.bytesUp.Load(), f.bytesDown.Load()
	// Off the epoll set now: the new process holds the same socket, and
	// its events must not wake this loop.
	ln.drv.lp.Unwatch(int(up.fd))
	up.watched = false // a restore watches it again
	ln.remove(f)
	return m, st, nil
}

// pipeOf is the read end of a new pipe holding dgs back to back (at most
// MaxPendingBytes: a pipe's buffer holds them whole).
func pipeOf(dgs [][]byte) (int, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return -1, os.NewSyscallError("pipe2", err)
	}
	defer unix.Close(p[1])
	for _, b := range dgs {
		for len(b) > 0 {
			n, err := unix.Write(p[1], b)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				unix.Close(p[0])
				return -1, os.NewSyscallError("write", err)
			}
			b = b[n:]
		}
	}
	return p[0], nil
}

// moved ends a flow the new process took: this side's copies close, and
// what it held here is given back, uncounted.
func (ln *listener) moved(m *moving) {
	f := m.f
	f.out = false // a dial under way finds no flow, and closes its socket
	if o := f.outcome; o != nil {
		f.outcome = nil
		o.drop()
	}
	ln.e.releaseGuard(f.ticket)
	if f.state == stRouted {
		up := f.up.(*rawUp)
		up.closed = true // unwatched already
		rawsys.Close(int(up.fd))
		f.release()
		return
	}
	rawsys.Close(m.fd) // the pipe; a dial still under way finds no flow and closes its socket
}

// restore puts a detached flow back in its table and on the loop, as it
// was.
func (ln *listener) restore(m *moving) {
	f := m.f
	f.out = false
	o := f.outcome
	f.outcome = nil
	if ln.drv.stopped || ln.t.lookup(f.client) != nil {
		// The listener ended meanwhile, or the client has a flow again:
		// this one ends here.
		if f.state != stRouted {
			rawsys.Close(m.fd)
		}
		if o != nil {
			o.drop()
		}
		ln.e.finish(f, "closed")
		return
	}
	ln.t.reinsert(f, m.pending)
	if s := ln.e.opt.Stats; s != nil {
		s.Active.Inc()
	}
	if f.state != stRouted {
		rawsys.Close(m.fd)
		ln.t.wait(f, f.start)
		if o != nil { // the dial ended while the flow was out: it goes on with its outcome
			ln.dialed(f, o.r, o.up, o.set, o.a, o.release)
		}
		return
	}
	ln.t.class(m.idle).push(f, f.last.Load())
	if m.awaiting {
		f.awaiting = true // awaitAt is as it was
		ln.t.awaiting.PushBack(f)
	}
	ln.watchUp(f)
}

// reinsert puts f, taken out by remove, back with the datagrams it held,
// past the bounds if need be: it held its place before.
func (t *flowTable) reinsert(f *flow, pending [][]byte) {
	t.flows[f.client] = f
	t.count.take(1, math.MaxInt)
	if f.counted {
		t.sources.add(sourceKey(f.client.Addr()), 1)
	}
	for _, p := range pending {
		t.pending.take(len(p), math.MaxInt)
		f.pending = append(f.pending, p)
		f.pendingN += len(p)
	}
}

// idleOf is the idle timeout f is queued under.
func (t *flowTable) idleOf(f *flow) time.Duration {
	for d, l := range t.classes {
		if l == f.list {
			return d
		}
	}
	return DefaultIdleTimeout
}

// FlowAdoption is a Flows message checked whole, its descriptors held
// and read by nobody, until the old process commits it; then Hold puts
// the flows in their listeners' tables, every step that can fail, their
// upstream sockets watched but unread; the new process tells the old one
// (handover.Adopted), which keeps its copies until then; then Start reads
// them. Discard gives them up, before or after Hold: the old process
// keeps the flows.
type FlowAdoption struct {
	byLn map[*listener][]adoption
	held map[*listener]*heldFlows
	n    int
}

// heldFlows is a listener's flows of a FlowAdoption once held.
type heldFlows struct {
	flows []*flow
	// reading is false until Start: the held upstream sockets' watch
	// drops their readiness (level-triggered, it comes again).
	reading bool
}

// adoption is one flow of a FlowAdoption, for its listener's loop.
type adoption struct {
	st      handover.FlowState
	client  netip.AddrPort
	fd      int // the upstream socket; -1 for an identifying flow (its pipe was read)
	pending [][]byte
}

// PrepareFlows checks the flows of a Flows message and takes the
// descriptors that came with it (closed here on error): on error none
// will be taken, and the old process keeps them all. An identifying
// flow's datagrams are read from their pipe now. A flow whose address this
// process no longer listens on will end here (it counts in Len, as the
// old process's copy closes too).
func (e *Engine) PrepareFlows(m handover.Message, files []*os.File) (*FlowAdoption, error) {
	fds, err := handover.TakeFDs(files)
	if err != nil {
		return nil, fmt.Errorf("udp: taking a moved flow's descriptor: %w", err)
	}
	defer func() { // those not taken over below
		for _, fd := range fds {
			if fd >= 0 {
				rawsys.Close(fd)
			}
		}
	}()
	states, err := handover.DecodeFlows(m)
	if err != nil {
		return nil, err
	}
	if len(states) != len(fds) {
		return nil, fmt.Errorf("udp: %d flows with %d descriptors", len(states), len(fds))
	}
	// The manager starts serving each address in a goroutine of its
	// own: one may not have started yet.
	lns := e.loopListeners()
	for _, st := range states {
		if listenerFor(lns, st.Listen, st.Socket) == nil {
			lns = e.waitListener(st.Listen, listenerWait)
		}
	}
	if len(lns) == 0 {
		return nil, errors.New("udp: no listener on an event loop (server.data_plane goroutines)")
	}
	fa := &FlowAdoption{byLn: map[*listener][]adoption{}, held: map[*listener]*heldFlows{}, n: len(states)}
	var lost int
	for i, st := range states {
		client, err := netip.ParseAddrPort(st.Client)
		if err != nil {
			return nil, fmt.Errorf("udp: a moved flow's client %q: %w", st.Client, err)
		}
		a := adoption{st: st, client: netip.AddrPortFrom(client.Addr().Unmap(), client.Port()), fd: fds[i]}
		if st.Identifying {
			if a.pending, err = readPending(fds[i], st.Pending); err != nil {
				return nil, fmt.Errorf("udp: a moved flow's datagrams: %w", err)
			}
			a.fd = -1 // its pipe is closed with the rest
		}
		ln := listenerFor(lns, st.Listen, st.Socket)
		if ln == nil {
			lost++
			continue
		}
		fa.byLn[ln] = append(fa.byLn[ln], a)
	}
	if lost > 0 {
		e.opt.Log.Warn("upgrade: udp flows of an address this process no longer listens on end", "flows", lost)
	}
	for _, as := range fa.byLn {
		for _, a := range as {
			if a.fd >= 0 {
				fds[slices.Index(fds, a.fd)] = -1 // the adoption holds it now
			}
		}
	}
	return fa, nil
}

// Len is how many flows the message held.
func (fa *FlowAdoption) Len() int { return fa.n }

// Hold takes the flows into the tables of the loops that read their
// listeners' sockets, accounted as this process's, their upstream sockets
// watched but unread: nothing is read or sent for them until Start. On
// error (a listener stopped, epoll) none is held, their copies here are
// closed, and the old process keeps them.
func (fa *FlowAdoption) Hold() error {
	for ln, as := range fa.byLn {
		delete(fa.byLn, ln)
		var claimed atomic.Bool // the loop ran the hold, or this gave up on it
		var hf *heldFlows
		var err error
		ok := ln.call(func() {
			if claimed.CompareAndSwap(false, true) {
				hf, err = ln.hold(as)
			}
		})
		if !ok { // the listener stopped: its flows end with it
			if claimed.CompareAndSwap(false, true) {
				closeAdoptions(as)
			}
			err = errListenerStopped
		}
		if err != nil {
			fa.Discard()
			return err
		}
		fa.held[ln] = hf
	}
	return nil
}

var errListenerStopped = errors.New("udp: the listener of a moved flow stopped")

// Start reads the held flows: routed ones read their upstream sockets,
// identifying ones are identified again from their datagrams (a dial
// under way is made again). It returns how many it started.
func (fa *FlowAdoption) Start() int {
	var n atomic.Int64
	for ln, hf := range fa.held {
		delete(fa.held, ln)
		ln.call(func() { // false: the listener stopped, its flows ended with it
			hf.reading = true
			now := ln.e.now()
			for _, f := range hf.flows {
				if ln.t.lookup(f.client) != f {
					continue // it ended meanwhile
				}
				n.Add(1)
				if f.state != stRouted {
					ln.identify(f, nil, now, false)
				}
			}
		})
	}
	return int(n.Load())
}

// Discard closes what the adoption holds, held or not yet, without a
// count or a log line: the old process keeps the flows.
func (fa *FlowAdoption) Discard() {
	for ln, as := range fa.byLn {
		closeAdoptions(as)
		delete(fa.byLn, ln)
	}
	for ln, hf := range fa.held {
		delete(fa.held, ln)
		if !ln.call(func() { ln.unhold(hf) }) {
			ln.unhold(hf) // the loop stopped: nothing else touches these now
		}
	}
}

func closeAdoptions(as []adoption) {
	for _, a := range as {
		if a.fd >= 0 {
			rawsys.Close(a.fd)
		}
	}
}

// hold holds each of as; on its loop. A flow whose client has one here
// already ends (its socket closes). On error none is held: those held are
// given up again and every descriptor of as is closed.
func (ln *listener) hold(as []adoption) (*heldFlows, error) {
	hf := &heldFlows{}
	for i, a := range as {
		if err := ln.holdFlow(a, hf); err != nil {
			ln.unhold(hf)
			closeAdoptions(as[i+1:])
			return nil, err
		}
	}
	return hf, nil
}

// unhold gives up held flows: each leaves its table and closes its
// socket, uncounted and unlogged, as a moved one does; on its loop.
func (ln *listener) unhold(hf *heldFlows) {
	for _, f := range hf.flows {
		if !ln.remove(f) {
			continue // it ended meanwhile, and closed what it held
		}
		ln.e.releaseGuard(f.ticket)
		if f.state == stRouted {
			up := f.up.(*rawUp)
			ln.drv.lp.Unwatch(int(up.fd))
			up.watched, up.closed = false, true
			rawsys.Close(int(up.fd))
			f.release()
		}
	}
	hf.flows = nil
}

// listenerWait bounds how long PrepareFlows waits for the listener of a
// moved flow's address to start.
const listenerWait = 5 * time.Second

// waitListener waits, at most d, until a listener of addr runs, and
// returns the loops' listeners then.
func (e *Engine) waitListener(addr string, d time.Duration) []*listener {
	timeout := time.NewTimer(d)
	defer timeout.Stop()
	for {
		e.mu.Lock()
		lns := onLoops(e.lns)
		// Any listener of addr ends the wait: one not on a loop (the
		// goroutine data plane) never will be.
		if listenerFor(e.lns, addr, 0) != nil || e.closed {
			e.mu.Unlock()
			return lns
		}
		if e.grown == nil {
			e.grown = make(chan struct{})
		}
		grown := e.grown
		e.mu.Unlock()
		select {
		case <-grown:
		case <-timeout.C:
			return lns
		}
	}
}

// listenerFor is the listener of addr's socket number socket, else the
// first of addr's; nil when this process does not listen on addr.
func listenerFor(lns []*listener, addr string, socket int) *listener {
	var first *listener
	for _, ln := range lns {
		if ln.addr != addr {
			continue
		}
		if slices.Index(ln.head.group, ln) == socket {
			return ln
		}
		if ln.primary {
			first = ln
		}
	}
	return first
}

// readPending reads an identifying flow's datagrams back from their pipe.
func readPending(fd int, lens []int) ([][]byte, error) {
	n := 0
	for _, l := range lens {
		n += l
	}
	buf := make([]byte, n)
	for got := 0; got < n; {
		k, err := unix.Read(fd, buf[got:])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return nil, os.NewSyscallError("read", err)
		case k == 0:
			return nil, fmt.Errorf("a pipe of %d bytes, %d said", got, n)
		}
		got += k
	}
	out := make([][]byte, len(lens))
	for i, l := range lens {
		out[i], buf = buf[:l:l], buf[l:]
	}
	return out, nil
}

// holdFlow makes a moved flow one of the listener's, in hf, accounted as
// the old process had it: the table's count and the guard's per-source
// one, the target's active count, its counters and its deadlines. Its
// route is this process's of the same protocol and label when the
// configuration still has it; otherwise the flow goes on all the same,
// counted under its protocol. An undecided flow keeps its datagrams, to be
// identified again when it starts. A flow whose client has one here
// already ends (its socket closes). On error its socket is closed, and
// the flows of hf are to be given up (unhold).
func (ln *listener) holdFlow(a adoption, hf *heldFlows) error {
	e := ln.e
	now := e.now()
	st, client, fd := a.st, a.client, a.fd
	if ln.drv.stopped || ln.t.lookup(client) != nil {
		if fd >= 0 {
			rawsys.Close(fd)
		}
		if ln.drv.stopped {
			return errListenerStopped
		}
		return nil
	}
	s := e.settings()
	ln.t.count.take(1, math.MaxInt) // it held its place in the old process
	f := ln.t.insert(client, now.Add(-st.Age), s.MaxFlowsPerSource > 0, e.adoptGuard(client.Addr()))
	f.ln = ln
	hf.flows = append(hf.flows, f)
	if e.opt.Stats != nil {
		e.opt.Stats.Active.Inc()
	}
	if st.Identifying {
		for _, p := range a.pending {
			ln.t.hold(f, p)
		}
		return nil
	}
	f.last.Store(now.Add(-st.IdleFor).UnixNano())
	r, rs := e.routeOf(st)
	// The socket keeps the options the old process set: UDP_GRO on it
	// makes a read a train, which only a rawUp that knows reads right.
	gro := (upSocketFor(st.Responses).gro && rawsys.SetGRO(fd)) || rawsys.GROOn(fd)
	up := &rawUp{fd: int32(fd), d: ln.drv, gro: gro, f: f}
	f.route, f.rs, f.up, f.state = r, rs, up, stRouted
	f.release = func() {}
	if set, err := rs.backend(r); err == nil && set != nil {
		var release func()
		if f.att, release = set.AdoptDatagram(st.Target); release != nil {
			f.release = release
		}
		f.set = set
	} else {
		f.att.Target = st.Target
	}
	f.heard = st.Heard
	f.owed.Store(st.Owed)
	f.dgUp.Store(st.DgUp)
	f.dgDown.Store(st.DgDown)
	f.bytesUp.Store(st.BytesUp)
	f.bytesDown.Store(st.BytesDown)
	idle := st.Idle
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	ln.t.class(idle).push(f, f.last.Load())
	if st.Awaiting {
		ln.t.await(f, now.Add(-st.AwaitFor))
	}
	// Watched now, read from Start on: what comes meanwhile waits in the
	// socket (level-triggered, its readiness is reported again).
	if err := ln.drv.lp.Watch(fd, func() {
		if hf.reading {
			ln.upReadable(up)
		}
	}); err != nil {
		return fmt.Errorf("udp: a moved flow's socket: %w", err)
	}
	up.watched = true
	return nil
}

// adoptGuard counts a moved flow in the guard's per-source count, as an
// established one: no cap refuses it.
func (e *Engine) adoptGuard(ip netip.Addr) (t guard.Ticket) {
	if g, ok := e.opt.Guard.(interface{ Adopt(netip.Addr) guard.Ticket }); ok {
		return g.Adopt(ip)
	}
	return t
}

// routeOf is the route a moved flow goes on under: this process's route of
// the same protocol and label, or one that counts it under its protocol
// when the configuration dropped it.
func (e *Engine) routeOf(st handover.FlowState) (*Route, *routeState) {
	if tb := e.table(); tb != nil {
		for _, r := range tb.routes {
			if r.Name == st.Protocol && r.Label == st.Route && r.state != nil {
				return r, r.state
			}
		}
	}
	stats := e.opt.Stats
	if stats == nil {
		stats = metrics.New().UDP
	}
	r := &Route{Name: st.Protocol, Label: st.Route, Targets: []string{st.Target}}
	r.state = &routeState{m: stats.Route(st.Protocol), responses: st.Responses}
	return r, r.state
}
