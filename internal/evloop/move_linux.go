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
// The batch goes out with the sockets and the pipes. On the new process's
// word that it can take the batch, the old process commits it (Moved):
// the loops close their copies and forget the connections without a log
// line or a close counted. On anything else they take them back
// (Restore) and go on as if nothing happened. The new process checks a
// batch whole (Prepare) and puts it on its loops only on the commit
// (Prepared.Commit), so a batch the old process gave up on is never read
// by both. It accounts for each connection as its own: the guard's
// per-source count, the target's least-connections count, the route's
// counters and the access line at the end.

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

// Moved: the new process took the batch; the loops close their copies.
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
			_ = epollCtl(l.ep, unix.EPOLL_CTL_DEL, fd, 0)
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
	rawClose(c.fd)
	if c.bfd >= 0 {
		rawClose(c.bfd)
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
		if fd < 0 {
			continue
		}
		l.setRef(fd, ref{c: c})
		if e := epollCtl(l.ep, unix.EPOLL_CTL_ADD, fd, epollConn); e != 0 {
			l.p.env.Log.Warn("epoll_ctl failed", "err", e)
			c.abortedHere()
			return false
		}
	}
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
// process's, its connections on no loop yet: nothing reads them until
// Commit. The old process still counts them as its own until it commits
// the batch; Discard gives them back to it, untouched.
type Prepared struct {
	p      *Plane
	byLoop [][]adoption
	n      int
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
				rawClose(fd)
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
	a := &Prepared{p: p, byLoop: make([][]adoption, len(p.loops)), n: len(gs)}
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

// Commit puts the connections on the loops; it returns how many it took.
// Those a stopped loop could not take are closed (this process is
// stopping too): the old process committed the batch, and must not read
// them again.
func (a *Prepared) Commit() (int, error) {
	taken := 0
	var err error
	for i, l := range a.p.loops {
		as := a.byLoop[i]
		a.byLoop[i] = nil
		if len(as) == 0 {
			continue
		}
		if err == nil && l.call(func() {
			for _, x := range as {
				l.adopt(x)
			}
		}) == nil {
			taken += len(as)
			continue
		}
		err = ErrClosed
		closeAdoptions(as)
	}
	return taken, err
}

// Discard closes the connections' descriptors here: the old process goes
// on with its own.
func (a *Prepared) Discard() {
	for i, as := range a.byLoop {
		closeAdoptions(as)
		a.byLoop[i] = nil
	}
}

func closeAdoptions(as []adoption) {
	for _, x := range as {
		for _, fd := range x.fds {
			rawClose(fd)
		}
	}
}

// adoption is one connection of a Conns message, for a loop.
type adoption struct {
	g   handover.ConnGroup
	fds []int // client, backend, then the pipes' ends
}

// adopt makes a moved connection one of the loop's, accounted as the old
// process had it: conntrack and the active gauge, the guard's per-source
// count, the target's least-connections count. A routed one's route and
// target are this process's when the configuration still has them;
// otherwise it completes all the same, counted under its protocol.
func (l *Loop) adopt(a adoption) {
	if a.g.State.Identifying {
		l.adoptIdentifying(a)
		return
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
	c.st = stHandover
	if st.Replay {
		l.adoptReplay(c, st, spipe{r: a.fds[2], w: a.fds[3]})
		return
	}
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
	if c.tcp && srv.TCPKeepAlive > 0 {
		setKeepAlive(c.fd, srv.TCPKeepAlive)
	}
	c.resume()
}

// adopted is a moved connection made the loop's, counted in conntrack and
// the active gauge (established: no cap refuses it), with its access
// record started when the old process accepted it and, when admitted,
// the guard's ticket for its client.
func (l *Loop) adopted(a adoption, bfd int, admitted bool) *conn {
	env := &l.p.env
	srv, _ := env.Settings()
	st := a.g.State
	c := &conn{l: l, srv: srv, fd: a.fds[0], bfd: bfd, hidx: -1, tcp: a.g.Client == handover.TCPConn}
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

// adoptReplay goes on with a pair whose backend had not taken the whole
// replay: p holds exactly the bytes left (the PROXY header's rest, then
// the first flight's), read into a buffer of this process and written as
// the old process would have, within a replay deadline from now; then the
// pair forwards. A pipe that holds less than it said ends the pair: the
// backend must never see a stream with a hole in it.
func (l *Loop) adoptReplay(c *conn, st handover.ConnState, p spipe) {
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
	hs.replayEnd = l.now.Add(c.srv.DialTimeout).UnixNano()
	if got != st.Up.Pending {
		l.p.env.Log.Warn("upgrade: a moved replay came short, the connection ends", "want", st.Up.Pending, "got", got)
		c.reason = proxy.Error
		c.finish()
		return
	}
	if c.tcp && c.srv.TCPKeepAlive > 0 {
		setKeepAlive(c.fd, c.srv.TCPKeepAlive)
	}
	c.resume()
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

// adoptIdentifying makes a moved connection that was still being
// identified, or whose trusted sender's PROXY header was being read, one
// of the loop's: the bytes it had sent are read back from their pipe into
// a buffer of this process. Identification starts over them, against this
// process's routes, with its timeouts from now; a header is read on,
// within its deadline from the accept, when this process trusts the
// sender too (otherwise its bytes are a first flight, as on a fresh
// connection).
func (l *Loop) adoptIdentifying(a adoption) {
	env := &l.p.env
	srv, trusted := env.Settings()
	st := a.g.State
	header := st.ProxyHeader
	c := l.adopted(a, -1, !header) // a header being read: the guard admits its client once it is known
	c.st = stIdentify
	l.setRef(c.fd, ref{c: c})
	hs := &handshake{fromTrusted: st.Trusted}
	c.hs = hs
	hs.lease = env.Bufs.Lease(identifyBuffer(srv))
	hs.buf = hs.lease.B
	if st.Up.Pipe {
		hs.prefilled = readPipe(spipe{r: a.fds[1], w: a.fds[2]}, hs.buf[:st.Up.Pending]) // less: identification goes on with what came
	}
	if e := epollCtl(l.ep, unix.EPOLL_CTL_ADD, c.fd, epollConn); e != 0 {
		env.Log.Warn("epoll_ctl failed", "err", e)
		c.finish()
		return
	}
	if c.tcp && srv.TCPKeepAlive > 0 {
		setKeepAlive(c.fd, srv.TCPKeepAlive)
	}
	c.up.readable, c.down.writable = true, true
	if header {
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
