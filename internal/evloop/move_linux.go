package evloop

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/darkit/protoplex/internal/guard"
	"github.com/darkit/protoplex/internal/handover"
	"github.com/darkit/protoplex/internal/logging"
	"github.com/darkit/protoplex/internal/proxy"
	"github.com/darkit/protoplex/internal/rawsys"
	"github.com/darkit/protoplex/internal/routing"
	"github.com/darkit/protoplex/protocols"
	"golang.org/x/sys/unix"
)

// Moving forwarded connections to another process (a binary upgrade).
//
// The old process detaches a batch: each loop takes its connections off
// epoll (stHandover: nothing on this side reads them any more) and
// describes each (handover.ConnState), in every state but the accept
// itself and an in-process handler's:
//   - a forwarding pair puts the bytes it holds for a destination into the
//     direction's splice pipe;
//   - a pair mid-replay puts a copy of what its backend has not taken yet
//     (the rest of the PROXY header, then of the first flight) into a pipe:
//     the new process writes exactly those bytes, then forwards;
//   - a connection whose trusted sender's PROXY header is being read, one
//     being identified, and one whose backend connect (stConnecting) or
//     off-loop dial (stDialing) is in progress, nothing of it sent, puts a
//     copy of the bytes read so far into a pipe: the new process reads the
//     header on, or identifies them again and dials its own backend. An
//     off-loop dial is abandoned once the batch moved; its goroutine posts
//     its outcome to the loop as always, which drops it (dialedOffLoop).
//
// The batch goes out with the sockets and the pipes. The new process
// checks it whole (Prepare) and says it can take it; the old process
// commits it; the new one puts it on its loops, unread (Prepared.Hold:
// every step that can fail), says it adopted it, and only then reads it
// (Prepared.Start). On that word the old process lets go (Moved): the
// loops close their copies and forget the connections without a log line
// or a close counted. On anything else, before or after the commit, they
// take them back (Restore) and go on as if nothing happened: a batch is
// never read by both, and never lost. The new process accounts for each
// connection as its own: the guard's per-source count, the target's
// least-connections count, the route's counters and the access line at
// the end.

// Batch is connections detached from their loops, ready to send:
// Msg and FDs go together to handover.Conn.Send.
type Batch struct {
	Msg   handover.Message
	FDs   []int
	conns []*conn
}

// Len is how many connections the batch holds.
func (b *Batch) Len() int { return len(b.conns) }

// Detach takes connections off the loops, at most maxFDs descriptors
// (≤ handover.MaxFDsPerMessage) of them; nil when none is left to move. A
// connection that cannot move (its held bytes do not fit a pipe) stays,
// and drains here.
func (p *Plane) Detach(maxFDs int) *Batch {
	b := &Batch{Msg: handover.Message{Kind: handover.Conns}}
	maxFDs = min(maxFDs, handover.MaxFDsPerMessage)
	for _, l := range p.loops {
		if len(b.FDs)+2 > maxFDs {
			break
		}
		_ = l.call(func() { l.detach(b, maxFDs) }) // a stopped loop has none
	}
	if len(b.conns) == 0 {
		return nil
	}
	return b
}

// Moved: the new process adopted the batch; the loops close their copies.
func (p *Plane) Moved(b *Batch) { p.each(b, (*conn).moved) }

// Restore: the batch did not move; its pairs go on here.
func (p *Plane) Restore(b *Batch) { p.each(b, (*conn).resume) }

// each runs fn on every conn of b, on its loop.
func (p *Plane) each(b *Batch, fn func(*conn)) {
	for _, l := range p.loops {
		// A loop stops only once it has no connection: a stopped one
		// holds none of b's.
		_ = l.call(func() {
			for _, c := range b.conns {
				if c.l == l {
					fn(c)
				}
			}
		})
	}
}

// detach moves the loop's connections into b while they fit.
func (l *Loop) detach(b *Batch, maxFDs int) {
	var next *conn
	for c := l.conns.Front(); c != nil; c = next {
		next = l.conns.Next(c) // c may end (resume), and leave the list
		need := c.moveFDs()
		if need == 0 || c.stay {
			continue
		}
		if len(b.FDs)+need > maxFDs {
			return
		}
		var st handover.ConnState
		var ok bool
		switch c.st {
		case stForward:
			st, ok = c.detach()
		case stReplay:
			st, ok = c.detachReplay()
		default:
			st, ok = c.detachIdentify()
		}
		if !ok {
			c.stay = true // it drains here; never tried again
			continue
		}
		cl, be := handover.UnixConn, handover.UnixConn
		if c.tcp {
			cl = handover.TCPConn
		}
		if c.bfd < 0 {
			be = handover.TCPConn // none: an identifying connection's group has no backend
		} else if dom, err := unix.GetsockoptInt(c.bfd, unix.SOL_SOCKET, unix.SO_DOMAIN); err == nil && dom != unix.AF_UNIX {
			be = handover.TCPConn
		}
		if err := handover.AppendConn(&b.Msg, st, cl, be); err != nil {
			c.l.p.env.Log.Warn("upgrade: a connection cannot move, it drains here", "err", err)
			c.stay = true
			c.resume()
			continue
		}
		b.FDs = append(b.FDs, c.fd)
		if !st.Identifying {
			b.FDs = append(b.FDs, c.bfd)
		}
		if c.hasMv {
			b.FDs = append(b.FDs, c.mv.r, c.mv.w)
		}
		for _, d := range [2]*dir{&c.up, &c.down} {
			if d.hasPipe {
				b.FDs = append(b.FDs, d.pipe.r, d.pipe.w)
			}
		}
		b.conns = append(b.conns, c)
	}
}

// moveFDs is how many descriptors the connection takes to move, at most;
// 0 when it does not move in its state (just accepted, ended, moving
// already).
func (c *conn) moveFDs() int {
	switch c.st {
	case stProxyHeader, stIdentify, stConnecting, stDialing:
		if c.firstFlight() > 0 {
			return 3 // the client, a pipe with the bytes read
		}
		return 1
	case stReplay:
		return 4 // client, backend, a pipe with the replay left
	case stForward:
		need := 2
		for _, d := range [2]*dir{&c.up, &c.down} {
			if d.blocked() {
				need += 2
			}
		}
		return need
	case stHandover, stDone:
	}
	return 0
}

// detach takes the forwarding pair off the loop and describes it; false
// (the pair goes on here) when the bytes it holds do not fit a pipe.
func (c *conn) detach() (handover.ConnState, bool) {
	l := c.l
	for _, d := range [2]*dir{&c.up, &c.down} {
		if !d.toPipe(l) {
			return handover.ConnState{}, false
		}
	}
	c.offLoop()
	c.was, c.st = stForward, stHandover
	st := c.routed()
	st.IdleFor = max(time.Duration(l.now.UnixNano()-c.last), 0)
	st.Up, st.Down = c.up.state(), c.down.state()
	return st, true
}

// routed describes a connection with a route and a backend, for the new
// process: what it is, where it goes, how it is accounted.
func (c *conn) routed() handover.ConnState {
	carried := c.acc.Carry()
	st := handover.ConnState{
		Protocol: carried.Protocol, Route: carried.Route, Target: c.target, Fallback: carried.Fallback,
		SNI: carried.MD.SNI, Host: carried.MD.Host, ALPN: carried.MD.ALPN, Trusted: c.hs != nil && c.hs.fromTrusted,
		Age: max(c.l.now.Sub(c.acc.Start), 0), Idle: max(c.idle, 0), PipeFallbacks: c.fallback,
	}
	if len(st.ALPN) > handover.MaxALPN {
		st.ALPN = st.ALPN[:handover.MaxALPN]
	}
	if a, ok := c.acc.Client.(*net.TCPAddr); ok {
		st.Client = a.AddrPort().String()
	}
	return st
}

// detachReplay takes a pair mid-replay off the loop and describes it,
// with a pipe holding a copy of exactly what its backend has not taken
// yet: the rest of the PROXY header (HeaderLeft), then of the first
// flight. Its own buffer keeps them, in case it resumes here; false (it
// goes on here) when no pipe takes them.
func (c *conn) detachReplay() (handover.ConnState, bool) {
	hs := c.hs
	n := len(hs.out) + len(hs.rest)
	if n == 0 || n > handover.MaxReplay {
		return handover.ConnState{}, false
	}
	p, ok := pipeWith(hs.out, hs.rest)
	if !ok {
		return handover.ConnState{}, false
	}
	c.mv, c.hasMv = p, true
	c.offLoop()
	c.was, c.st = stReplay, stHandover
	st := c.routed()
	st.Replay = true
	if hs.hdr {
		st.HeaderLeft = len(hs.out)
	}
	st.Up = handover.DirState{N: c.up.n, Pipe: true, Pending: n}
	return st, true
}

// pipeWith is a new pipe holding bs, back to back; false when it cannot
// be had or does not take them all (an empty pipe takes 64 KiB at least,
// makePipe's size when the kernel allows it).
func pipeWith(bs ...[]byte) (spipe, bool) {
	p, ok := makePipe()
	if !ok {
		return spipe{}, false
	}
	for _, b := range bs {
		if len(b) == 0 {
			continue
		}
		if w, _ := unix.Write(p.w, b); w != len(b) {
			p.close()
			return spipe{}, false
		}
	}
	return p, true
}

// offLoop takes the connection's sockets off epoll and its deadline off
// the heap: nothing on this side reads them any more.
func (c *conn) offLoop() {
	l := c.l
	for _, fd := range [2]int{c.fd, c.bfd} {
		if fd >= 0 {
			_ = rawsys.EpollCtl(l.ep, unix.EPOLL_CTL_DEL, fd, 0)
			l.clearRef(fd)
		}
	}
	c.clearDeadline()
}

// firstFlight is how many bytes a connection not yet sending to a
// backend has read from its client: what the new process reads on from,
// or identifies again.
func (c *conn) firstFlight() int {
	switch c.st {
	case stProxyHeader:
		return c.hs.n // the header so far
	case stConnecting, stDialing:
		return c.hs.res.N // the replay: nothing of it was sent
	}
	return c.hs.sess.N()
}

// detachIdentify takes a connection whose trusted sender's PROXY header
// is being read, one still being identified, or one whose backend connect
// or off-loop dial is in progress (nothing sent: the new process dials
// again), off the loop and describes it as identifying, with a pipe
// holding a copy of the bytes read so far. Its own buffer keeps them, a
// connect its socket and a dial its goroutine, in case it resumes here;
// false (it goes on here) when no pipe can be had.
func (c *conn) detachIdentify() (handover.ConnState, bool) {
	l := c.l
	hs := c.hs
	n := c.firstFlight()
	if n > handover.MaxIdentify {
		return handover.ConnState{}, false
	}
	if n > 0 {
		p, ok := pipeWith(hs.buf[:n])
		if !ok {
			return handover.ConnState{}, false
		}
		c.mv, c.hasMv = p, true
	}
	c.offLoop()
	header := c.st == stProxyHeader
	c.was, c.st = c.st, stHandover
	st := handover.ConnState{Identifying: true, ProxyHeader: header, Trusted: hs.fromTrusted && !header,
		Age: max(l.now.Sub(c.acc.Start), 0), Up: handover.DirState{Pipe: n > 0, Pending: n}}
	if a, ok := c.acc.Client.(*net.TCPAddr); ok {
		st.Client = a.AddrPort().String()
	}
	return st, true
}

// toPipe puts the bytes the direction holds for its destination into its
// pipe, behind what the pipe holds, and gives an empty pipe back to the
// loop: after it the direction's bytes in flight are all in a pipe, or
// none is. False when they do not fit (what was written stays in order:
// the pipe drains before the rest).
func (d *dir) toPipe(l *Loop) bool {
	if len(d.pend) > 0 {
		if !d.hasPipe {
			p, ok := l.getPipe()
			if !ok {
				return false
			}
			d.pipe, d.hasPipe = p, true
		}
		for len(d.pend) > 0 {
			n, err := unix.Write(d.pipe.w, d.pend)
			if n <= 0 {
				if errors.Is(err, unix.EINTR) {
					continue
				}
				return false
			}
			d.inPipe += n
			d.pend = d.pend[n:]
		}
		l.p.env.Bufs.Put(d.pendBuf)
		d.pendBuf, d.pend = nil, nil
	}
	if d.hasPipe && d.inPipe == 0 {
		l.putPipe(d.pipe)
		d.hasPipe = false
	}
	return true
}

func (d *dir) state() handover.DirState {
	return handover.DirState{N: d.n, Pipe: d.hasPipe, Pending: d.inPipe, RDHUP: d.rdhup, EOF: d.eof, Shut: d.shut}
}

// moved: another process has the pair now. Its copies close here, and
// what it held is given back without a close counted or logged: the new
// process counts and logs the connection when it ends.
func (c *conn) moved() {
	if c.st != stHandover {
		return
	}
	c.st = stDone
	l := c.l
	env := &l.p.env
	rawsys.Close(c.fd)
	if c.bfd >= 0 {
		rawsys.Close(c.bfd)
	}
	c.fd, c.bfd = -1, -1
	c.dropMv()
	if c.goDial {
		c.hs.cancel() // abandoned: its goroutine's outcome is dropped when it comes (dialedOffLoop)
	}
	if c.dialed != nil {
		c.dropDial(c.hs, *c.dialed)
		c.dialed = nil
	}
	if c.hs != nil {
		c.hs.lease.Release()
		c.hs = nil
	}
	for _, d := range [2]*dir{&c.up, &c.down} {
		if d.hasPipe {
			d.pipe.close() // the new process has its own copies, with the bytes
			d.hasPipe, d.inPipe = false, 0
		}
	}
	if c.release != nil {
		c.release()
	}
	if c.admitted {
		env.Guard.Release(c.ticket)
	}
	if c.counted {
		env.Conns.Remove(c)
		env.Stats.Active.Dec()
	}
	l.disown(c)
}

// resume puts a connection in stHandover back on the loop, in the state
// it left: one that did not move, or a pair just adopted. One aborted
// meanwhile (a drain's deadline) ends now, as its state ends on abort.
func (c *conn) resume() {
	if c.st != stHandover {
		return
	}
	c.dropMv()
	switch c.was {
	case stProxyHeader:
		c.resumeProxyHeader()
	case stIdentify:
		c.resumeIdentify()
	case stConnecting:
		c.resumeConnecting()
	case stDialing:
		c.resumeDialing()
	case stReplay:
		c.resumeReplay()
	case stForward:
		c.resumeForward()
	case stHandover, stDone: // never left for stHandover
	}
}

// rejoin puts the connection's sockets back on epoll, in state st; false
// when it ended, as its state ends on abort (abortedHere).
func (c *conn) rejoin(st state) bool {
	l := c.l
	c.st = st
	for _, fd := range [2]int{c.fd, c.bfd} {
		if fd < 0 || c.held { // a held one is on epoll already (register)
			continue
		}
		l.setRef(fd, ref{c: c})
		if e := rawsys.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, fd, epollConn); e != 0 {
			l.p.env.Log.Warn("epoll_ctl failed", "err", e)
			c.abortedHere()
			return false
		}
	}
	c.held = false
	if c.aborted {
		c.abortedHere()
		return false
	}
	return true
}

// abortedHere ends a connection back from stHandover as abort ends its
// state: counted and logged as on the goroutine path.
func (c *conn) abortedHere() {
	c.aborted = false
	c.abort()
}

func (c *conn) resumeForward() {
	if !c.rejoin(stForward) {
		return
	}
	// Edge-triggered: what happened while off epoll is not reported again,
	// so each side is taken as ready; the first EAGAIN corrects it.
	c.up.readable, c.up.writable, c.down.readable, c.down.writable = !c.up.eof, true, !c.down.eof, true
	if c.idle > 0 {
		c.setDeadline(c.last + int64(c.idle))
	}
	c.pumpBoth()
}

// resumeProxyHeader: the header's bytes so far are still in the buffer;
// it reads on, within the deadline it had.
func (c *conn) resumeProxyHeader() {
	if !c.rejoin(stProxyHeader) {
		return
	}
	c.up.readable = true
	c.setDeadline(c.acc.Start.Add(c.srv.IdentifyTimeout).UnixNano())
	c.readProxyHeader()
}

// resumeIdentify: its buffer still holds what it had read; it reads on.
func (c *conn) resumeIdentify() {
	if !c.rejoin(stIdentify) {
		return
	}
	c.up.readable = true
	c.setDeadline(c.hs.sess.Deadline().UnixNano())
	c.readIdentify()
}

// resumeConnecting: the connect's outcome, if it came meanwhile, is
// reported again when the socket rejoins epoll (EPOLL_CTL_ADD reports
// what is ready now).
func (c *conn) resumeConnecting() {
	if !c.rejoin(stConnecting) {
		return
	}
	c.setDeadline(c.hs.dialEnd)
}

// resumeDialing: its goroutine still dials, or its outcome came
// meanwhile and is taken now (an aborted one ends there).
func (c *conn) resumeDialing() {
	hs := c.hs
	if c.rejoin(stDialing) {
		c.setDeadline(hs.dialEnd)
	}
	if d := c.dialed; d != nil {
		c.dialed = nil
		c.dialedOffLoop(hs, d.nc, d.err)
	}
}

// resumeReplay: its buffer still holds what the backend has not taken;
// it writes on, within the deadline it had.
func (c *conn) resumeReplay() {
	if !c.rejoin(stReplay) {
		return
	}
	c.up.readable, c.up.writable, c.down.readable, c.down.writable = true, true, true, true
	c.setDeadline(c.hs.replayEnd)
	c.writeReplay()
}

// dropDial ends an off-loop dial whose connection moved to another
// process: a socket it got is closed, the attempt counted as the success
// it was.
func (c *conn) dropDial(hs *handshake, d dialOutcome) {
	if d.err == nil {
		hs.plan.Done(hs.att, c.l.since(hs.attStart), nil)()
		d.nc.Close()
	}
}

// dropMv closes the pipe that carried a copy of a connection's bytes.
func (c *conn) dropMv() {
	if c.hasMv {
		c.mv.close()
		c.hasMv = false
	}
}

// Prepared is a Conns message checked whole, its descriptors this
// process's, its connections on no loop yet. The old process still counts
// them as its own, and keeps its copies, until the new one says it
// adopted them (handover.Adopted): Hold puts them on the loops, every step
// of the adoption that can fail, where nothing reads them; the new process
// says so; only then Start reads them. Discard gives them back to the old
// process, before or after Hold, unread.
type Prepared struct {
	p      *Plane
	byLoop [][]adoption
	held   [][]held
	n      int
}

// held is a connection on its loop in stHandover, its sockets on epoll
// but read by nothing until Start.
type held struct {
	c           *conn
	identifying bool // it is identified again from its bytes (start)
	header      bool // its trusted sender's PROXY header was being read
}

// Len is how many connections it holds.
func (a *Prepared) Len() int { return a.n }

// Prepare takes the connections of a Conns message and the descriptors
// that came with it (closed here on error). It checks the whole message
// before it takes any: on error none was taken, and the old process
// keeps them all.
func (p *Plane) Prepare(m handover.Message, files []*os.File) (*Prepared, error) {
	fds, err := handover.TakeFDs(files)
	if err != nil {
		return nil, fmt.Errorf("evloop: taking a moved connection's descriptor: %w", err)
	}
	defer func() { // those not taken over below
		for _, fd := range fds {
			if fd >= 0 {
				rawsys.Close(fd)
			}
		}
	}()
	gs, err := handover.DecodeConns(m)
	if err != nil {
		return nil, err
	}
	srv, _ := p.env.Settings()
	for _, g := range gs {
		read := g.State.Up.Pending - g.State.HeaderLeft // a replay's: the first flight's part of it
		if (g.State.Identifying || g.State.Replay) && read > identifyBuffer(srv) {
			return nil, fmt.Errorf("evloop: a moved connection read %d bytes, more than this process's identification buffer (%d)", read, identifyBuffer(srv))
		}
		if g.State.Client != "" {
			if _, err := netip.ParseAddrPort(g.State.Client); err != nil {
				return nil, fmt.Errorf("evloop: a moved connection's client %q: %w", g.State.Client, err)
			}
		}
	}
	a := &Prepared{p: p, byLoop: make([][]adoption, len(p.loops)), held: make([][]held, len(p.loops)), n: len(gs)}
	turn := int(p.adopted.Add(1))
	for _, g := range gs {
		n := g.State.FDs()
		i := turn % len(p.loops)
		turn++
		a.byLoop[i] = append(a.byLoop[i], adoption{g: g, fds: append([]int(nil), fds[g.First:g.First+n]...)})
		for k := g.First; k < g.First+n; k++ {
			fds[k] = -1 // a's now
		}
	}
	return a, nil
}

// Hold puts the connections on the loops, accounted as this process's
// (conntrack, the active gauge, the guard's and the target's counts) and
// on epoll, in stHandover: nothing reads them and no timer runs for them
// until Start. On error (a stopped loop, a pipe that holds less than it
// said, epoll) none is held, their copies here are closed, and the old
// process goes on with its own.
func (a *Prepared) Hold() error {
	for i, l := range a.p.loops {
		as := a.byLoop[i]
		if len(as) == 0 {
			continue
		}
		err := error(ErrClosed)
		_ = l.call(func() {
			a.byLoop[i] = nil // hold closes or holds each
			a.held[i], err = l.hold(as)
		})
		if err != nil {
			a.Discard()
			return err
		}
	}
	return nil
}

// Start reads the held connections: each goes on from the state it moved
// in. It returns how many it started.
func (a *Prepared) Start() int {
	n := 0
	for i, l := range a.p.loops {
		hs := a.held[i]
		a.held[i] = nil
		// A loop stops only once it has no connection: one holding these
		// runs.
		if len(hs) > 0 && l.call(func() {
			for _, h := range hs {
				l.start(h)
			}
		}) == nil {
			n += len(hs)
		}
	}
	return n
}

// Discard closes the connections' descriptors here, held or not yet,
// without a count or a log line: the old process goes on with its own.
func (a *Prepared) Discard() {
	for i, as := range a.byLoop {
		closeAdoptions(as)
		a.byLoop[i] = nil
	}
	for i, hs := range a.held {
		a.held[i] = nil
		if len(hs) > 0 {
			_ = a.p.loops[i].call(func() {
				for _, h := range hs {
					h.c.unhold()
				}
			})
		}
	}
}

func closeAdoptions(as []adoption) {
	for _, x := range as {
		for _, fd := range x.fds {
			rawsys.Close(fd)
		}
	}
}

// adoption is one connection of a Conns message, for a loop.
type adoption struct {
	g   handover.ConnGroup
	fds []int // client, backend, then the pipes' ends
}

// hold holds each of as on the loop; on error none: those held are given
// up again and every descriptor of as is closed.
func (l *Loop) hold(as []adoption) ([]held, error) {
	hs := make([]held, 0, len(as))
	for i, x := range as {
		h, err := l.holdOne(x)
		if err != nil {
			for _, h := range hs {
				h.c.unhold()
			}
			closeAdoptions(as[i+1:])
			return nil, err
		}
		hs = append(hs, h)
	}
	return hs, nil
}

// holdOne makes a moved connection one of the loop's, accounted as the
// old process had it: conntrack and the active gauge, the guard's
// per-source count, the target's least-connections count. A routed one's
// route and target are this process's when the configuration still has
// them; otherwise it completes all the same, counted under its protocol.
// On error its descriptors are closed and nothing of it stays.
func (l *Loop) holdOne(a adoption) (held, error) {
	if a.g.State.Identifying {
		return l.holdIdentifying(a)
	}
	env := &l.p.env
	srv, _ := env.Settings()
	st := a.g.State
	c := l.adopted(a, a.fds[1], true)
	c.acc.Resume(logging.Carried{Protocol: st.Protocol, Route: st.Route, Fallback: st.Fallback,
		MD: protocols.Metadata{SNI: st.SNI, Host: st.Host, ALPN: st.ALPN}})
	c.entry = routeOf(env, st)
	c.target = st.Target
	c.release = func() {}
	if c.entry.Backend != nil {
		if r := c.entry.Backend.Adopt(st.Target); r != nil {
			c.release = r
		}
	}
	c.idle = st.Idle
	c.fallback = st.PipeFallbacks
	if st.Replay {
		if err := l.holdReplay(c, st, spipe{r: a.fds[2], w: a.fds[3]}); err != nil {
			c.unhold()
			return held{}, err
		}
	} else {
		c.was = stForward
		c.last = l.now.UnixNano() - int64(st.IdleFor)
		k := 2
		for _, x := range [2]struct {
			d *dir
			s handover.DirState
		}{{&c.up, st.Up}, {&c.down, st.Down}} {
			x.d.n, x.d.rdhup, x.d.eof, x.d.shut = x.s.N, x.s.RDHUP, x.s.EOF, x.s.Shut
			if x.s.Pipe {
				x.d.pipe, x.d.hasPipe, x.d.inPipe = spipe{r: a.fds[k], w: a.fds[k+1]}, true, x.s.Pending
				k += 2
			}
		}
	}
	if c.tcp && srv.TCPKeepAlive > 0 {
		setKeepAlive(c.fd, srv.TCPKeepAlive)
	}
	if err := c.register(); err != nil {
		c.unhold()
		return held{}, err
	}
	return held{c: c}, nil
}

// adopted is a moved connection made the loop's, in stHandover, counted
// in conntrack and the active gauge (established: no cap refuses it),
// with its access record started when the old process accepted it and,
// when admitted, the guard's ticket for its client.
func (l *Loop) adopted(a adoption, bfd int, admitted bool) *conn {
	env := &l.p.env
	srv, _ := env.Settings()
	st := a.g.State
	c := &conn{l: l, srv: srv, fd: a.fds[0], bfd: bfd, hidx: -1, tcp: a.g.Client == handover.TCPConn, st: stHandover}
	client := unixPeer
	if ap, err := netip.ParseAddrPort(st.Client); err == nil {
		client = net.TCPAddrFromAddrPort(ap)
	}
	c.acc = logging.NewAccess(env.Log, logging.AccessMode{Close: srv.AccessLog, Open: srv.AccessLogOpen}, client)
	c.acc.Start = l.now.Add(-st.Age)
	l.own(c)
	env.Conns.Add(c, math.MaxInt)
	c.counted = true
	env.Stats.Active.Inc()
	c.ip = guard.AddrOf(client)
	if admitted {
		c.ticket, c.admitted = env.Guard.Adopt(c.ip), true
	}
	return c
}

// register puts a held connection's sockets on epoll: what they report
// meanwhile is dropped (stHandover), and taken again when it starts
// (rejoin, start take each side as ready).
func (c *conn) register() error {
	l := c.l
	for _, fd := range [2]int{c.fd, c.bfd} {
		if fd < 0 {
			continue
		}
		l.setRef(fd, ref{c: c})
		if e := rawsys.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, fd, epollConn); e != 0 {
			return fmt.Errorf("evloop: a moved connection: %w", os.NewSyscallError("epoll_ctl", e))
		}
	}
	c.held = true
	return nil
}

// unhold gives up a held connection: its copies here close and it leaves
// the loop uncounted and unlogged, as a moved one does.
func (c *conn) unhold() {
	c.offLoop()
	c.held = false
	c.st = stHandover
	c.moved()
}

// start reads a held connection: a routed one goes on as a restored one
// does (resume), an identifying one is identified again.
func (l *Loop) start(h held) {
	c := h.c
	if !h.identifying {
		if c.was == stReplay {
			c.hs.replayEnd = l.now.Add(c.srv.DialTimeout).UnixNano()
		}
		c.resume()
		return
	}
	c.held = false
	c.st = stIdentify
	if c.aborted { // a drain's deadline while it was held
		c.reason = proxy.Aborted
		c.finish()
		return
	}
	c.up.readable, c.down.writable = true, true
	if h.header {
		srv, trusted := l.p.env.Settings()
		hs := c.hs
		hs.fromTrusted = srv.AcceptProxy && trusted.Contains(c.ip)
		if hs.fromTrusted {
			hs.n, hs.prefilled = hs.prefilled, 0
			c.st = stProxyHeader
			c.setDeadline(c.acc.Start.Add(srv.IdentifyTimeout).UnixNano())
			c.readProxyHeader()
			return
		}
		c.admit()
		return
	}
	c.identify()
}

// holdReplay holds a pair whose backend had not taken the whole replay:
// p holds exactly the bytes left (the PROXY header's rest, then the first
// flight's), read into a buffer of this process, to be written as the old
// process would have, within a replay deadline from its start; then the
// pair forwards. A pipe that holds less than it said is an error: the
// backend must never see a stream with a hole in it, and the old process
// keeps the pair.
func (l *Loop) holdReplay(c *conn, st handover.ConnState, p spipe) error {
	hs := &handshake{connected: true, fromTrusted: st.Trusted}
	c.hs = hs
	hs.lease = l.p.env.Bufs.Lease(st.Up.Pending)
	hs.buf = hs.lease.B
	got := readPipe(p, hs.buf[:st.Up.Pending])
	hs.out, hs.rest, hs.hdr = hs.buf[:st.HeaderLeft], hs.buf[st.HeaderLeft:st.Up.Pending], st.HeaderLeft > 0
	if !hs.hdr {
		hs.out, hs.rest = hs.rest, nil
	}
	c.up.n = st.Up.N
	c.was = stReplay
	if got != st.Up.Pending {
		return fmt.Errorf("evloop: a moved replay of %d bytes came with %d", st.Up.Pending, got)
	}
	return nil
}

// readPipe reads p into b, up to len(b) bytes or the pipe's end, and
// closes p; it returns how many it read.
func readPipe(p spipe, b []byte) int {
	got := 0
	for got < len(b) {
		n, err := unix.Read(p.r, b[got:])
		if n <= 0 && err != unix.EINTR {
			break // its end, or EAGAIN: nothing more is coming, the sender wrote it all before it sent the pipe
		}
		got += max(n, 0)
	}
	p.close()
	return got
}

// holdIdentifying holds a moved connection that was still being
// identified, or whose trusted sender's PROXY header was being read: the
// bytes it had sent are read back from their pipe (a copy: the old
// process keeps its own) into a buffer of this process. On its start
// identification starts over them, against this process's routes, with
// its timeouts from then; a header is read on, within its deadline from
// the accept, when this process trusts the sender too (otherwise its
// bytes are a first flight, as on a fresh connection).
func (l *Loop) holdIdentifying(a adoption) (held, error) {
	env := &l.p.env
	srv, _ := env.Settings()
	st := a.g.State
	header := st.ProxyHeader
	c := l.adopted(a, -1, !header) // a header being read: the guard admits its client once it is known
	c.was = stIdentify
	hs := &handshake{fromTrusted: st.Trusted}
	c.hs = hs
	hs.lease = env.Bufs.Lease(identifyBuffer(srv))
	hs.buf = hs.lease.B
	if st.Up.Pipe {
		hs.prefilled = readPipe(spipe{r: a.fds[1], w: a.fds[2]}, hs.buf[:st.Up.Pending]) // less: identification goes on with what came
	}
	if c.tcp && srv.TCPKeepAlive > 0 {
		setKeepAlive(c.fd, srv.TCPKeepAlive)
	}
	if err := c.register(); err != nil {
		c.unhold()
		return held{}, err
	}
	return held{c: c, identifying: true, header: header}, nil
}

// routeOf is the route a moved connection goes on under: this process's
// entry of the same label and protocol, or one that counts it under its
// protocol when the configuration dropped the route.
func routeOf(env *Env, st handover.ConnState) *routing.Entry {
	if rt := env.Routing(); rt != nil {
		for _, e := range rt.Entries {
			if e != nil && e.Label == st.Route && e.Proto != nil && e.Proto.Name == st.Protocol && e.Backend != nil {
				return e
			}
		}
	}
	return &routing.Entry{Proto: &protocols.Protocol{Name: st.Protocol}, Label: st.Route, Stats: env.Stats.Route(st.Protocol, st.Route)}
}
