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
// The old process detaches a batch: each loop takes its forwarding pairs
// (and its connections still being identified, or connecting to their
// backend, with the bytes read so far: adoptIdentifying) off epoll (stHandover: nothing on this side reads them any more), puts
// the bytes it holds for a destination into the direction's splice pipe,
// and describes each pair (handover.ConnState). The batch goes out with
// the sockets and the pipes; on the new process's acknowledgement the old
// loops close their copies and forget the pairs without a log line or a
// close counted (Moved); on anything else they take them back (Restore)
// and go on as if nothing happened. The new process adopts each pair into
// one of its loops, in the state it left (Adopt), and accounts for it as
// its own: the guard's per-source count, the target's least-connections
// count, the route's counters and the access line at the end.

// Batch is forwarding pairs detached from their loops, ready to send:
// Msg and FDs go together to handover.Conn.Send.
type Batch struct {
	Msg   handover.Message
	FDs   []int
	conns []*conn
}

// Len is how many connections the batch holds.
func (b *Batch) Len() int { return len(b.conns) }

// Detach takes forwarding pairs and identifying connections off the
// loops, at most maxFDs descriptors
// (≤ handover.MaxFDsPerMessage) of them; nil when none is left to move. A
// pair that cannot move (its held bytes do not fit a pipe) stays, and
// drains here.
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

// detach moves the loop's forwarding pairs into b while they fit.
func (l *Loop) detach(b *Batch, maxFDs int) {
	var next *conn
	for c := l.conns.Front(); c != nil; c = next {
		next = l.conns.Next(c) // c may end (resume), and leave the list
		if (c.st != stForward && c.st != stIdentify && c.st != stConnecting) || c.stay {
			continue
		}
		need := 2
		if c.st == stIdentify || c.st == stConnecting {
			need = 1
			if c.firstFlight() > 0 {
				need += 2
			}
		}
		for _, d := range [2]*dir{&c.up, &c.down} {
			if c.st == stForward && d.blocked() {
				need += 2
			}
		}
		if len(b.FDs)+need > maxFDs {
			return
		}
		var st handover.ConnState
		var ok bool
		if c.st == stIdentify || c.st == stConnecting {
			st, ok = c.detachIdentify()
		} else {
			st, ok = c.detach()
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

// detach takes the forwarding pair off the loop and describes it; false
// (the pair goes on here) when the bytes it holds do not fit a pipe.
func (c *conn) detach() (handover.ConnState, bool) {
	l := c.l
	for _, d := range [2]*dir{&c.up, &c.down} {
		if !d.toPipe(l) {
			return handover.ConnState{}, false
		}
	}
	_ = epollCtl(l.ep, unix.EPOLL_CTL_DEL, c.fd, 0)
	_ = epollCtl(l.ep, unix.EPOLL_CTL_DEL, c.bfd, 0)
	l.clearRef(c.fd)
	l.clearRef(c.bfd)
	c.clearDeadline()
	c.was, c.st = stForward, stHandover

	carried := c.acc.Carry()
	st := handover.ConnState{
		Protocol: carried.Protocol, Route: carried.Route, Target: c.target, Fallback: carried.Fallback,
		SNI: carried.MD.SNI, Host: carried.MD.Host, ALPN: carried.MD.ALPN,
		Age: max(l.now.Sub(c.acc.Start), 0), IdleFor: max(time.Duration(l.now.UnixNano()-c.last), 0), Idle: max(c.idle, 0),
		PipeFallbacks: c.fallback, Up: c.up.state(), Down: c.down.state(),
	}
	if len(st.ALPN) > handover.MaxALPN {
		st.ALPN = st.ALPN[:handover.MaxALPN]
	}
	if a, ok := c.acc.Client.(*net.TCPAddr); ok {
		st.Client = a.AddrPort().String()
	}
	return st, true
}

// firstFlight is how many bytes an identifying or connecting connection
// has read from its client: what the new process identifies again.
func (c *conn) firstFlight() int {
	if c.st == stConnecting {
		return c.hs.res.N // the replay: nothing of it was sent
	}
	return c.hs.sess.N()
}

// detachIdentify takes a connection still being identified, or whose
// backend connect is in progress (nothing sent: the new process dials
// again), off the loop and describes it as identifying, with a pipe
// holding a copy of the bytes read so far (its own buffer keeps them, and
// a connect its socket, in case it resumes here); false (it goes on here)
// when no pipe can be had.
func (c *conn) detachIdentify() (handover.ConnState, bool) {
	l := c.l
	hs := c.hs
	n := c.firstFlight()
	if n > handover.MaxIdentify {
		return handover.ConnState{}, false
	}
	if n > 0 {
		p, ok := makePipe()
		if !ok {
			return handover.ConnState{}, false
		}
		if w, _ := unix.Write(p.w, hs.buf[:n]); w != n { // an empty pipe takes 64 KiB at least in one write
			p.close()
			return handover.ConnState{}, false
		}
		c.mv, c.hasMv = p, true
	}
	_ = epollCtl(l.ep, unix.EPOLL_CTL_DEL, c.fd, 0)
	l.clearRef(c.fd)
	if c.bfd >= 0 {
		_ = epollCtl(l.ep, unix.EPOLL_CTL_DEL, c.bfd, 0)
		l.clearRef(c.bfd)
	}
	c.clearDeadline()
	c.was, c.st = c.st, stHandover
	st := handover.ConnState{Identifying: true, Trusted: hs.fromTrusted, Age: max(l.now.Sub(c.acc.Start), 0),
		Up: handover.DirState{Pipe: n > 0, Pending: n}}
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

// resume puts a pair in stHandover back on the loop: one that did not
// move, or one just adopted. A pair aborted meanwhile (a drain's
// deadline) ends now.
func (c *conn) resume() {
	if c.st != stHandover {
		return
	}
	switch c.was {
	case stIdentify:
		c.resumeIdentify()
		return
	case stConnecting:
		c.resumeConnecting()
		return
	}
	l := c.l
	c.st = stForward
	for _, fd := range [2]int{c.fd, c.bfd} {
		l.setRef(fd, ref{c: c})
		if e := epollCtl(l.ep, unix.EPOLL_CTL_ADD, fd, epollConn); e != 0 {
			l.p.env.Log.Warn("epoll_ctl failed", "err", e)
			c.reason = proxy.Error
			c.finish()
			return
		}
	}
	if c.aborted {
		c.finish()
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

// resumeIdentify puts an identifying connection back on the loop, where
// it reads on; its buffer still holds what it had read.
func (c *conn) resumeIdentify() {
	l := c.l
	c.dropMv()
	c.st = stIdentify
	l.setRef(c.fd, ref{c: c})
	if e := epollCtl(l.ep, unix.EPOLL_CTL_ADD, c.fd, epollConn); e != 0 {
		l.p.env.Log.Warn("epoll_ctl failed", "err", e)
		c.aborted = false
		c.abort() // ends it as unidentified, counted
		return
	}
	if c.aborted {
		c.aborted = false
		c.abort()
		return
	}
	c.up.readable = true
	c.setDeadline(c.hs.sess.Deadline().UnixNano())
	c.readIdentify()
}

// resumeConnecting puts a connection whose backend connect is in
// progress back on the loop: the connect's outcome, if it came meanwhile,
// is reported again when the socket rejoins epoll.
func (c *conn) resumeConnecting() {
	l := c.l
	c.dropMv()
	c.st = stConnecting
	for _, fd := range [2]int{c.fd, c.bfd} {
		l.setRef(fd, ref{c: c})
		if e := epollCtl(l.ep, unix.EPOLL_CTL_ADD, fd, epollConn); e != 0 {
			l.p.env.Log.Warn("epoll_ctl failed", "err", e)
			c.aborted = false
			c.abort() // ends it as a failed dial, counted
			return
		}
	}
	if c.aborted {
		c.aborted = false
		c.abort()
		return
	}
	c.setDeadline(c.hs.dialEnd) // readiness missed meanwhile: EPOLL_CTL_ADD reports what is ready now
}

// dropMv closes the pipe that carried an identifying connection's bytes.
func (c *conn) dropMv() {
	if c.hasMv {
		c.mv.close()
		c.hasMv = false
	}
}

// Adopt takes the connections of a Conns message and the descriptors
// that came with it (closed here, in every case) into the loops; it
// returns how many it took. It checks the whole message before it takes
// any: on error none was taken, and the old process keeps them all.
func (p *Plane) Adopt(m handover.Message, files []*os.File) (int, error) {
	fds := make([]int, 0, len(files))
	defer func() {
		for _, fd := range fds {
			if fd >= 0 {
				rawClose(fd)
			}
		}
	}()
	var err error
	for _, f := range files { // a duplicate each, as f.Fd would make the socket blocking
		if err == nil {
			var fd int
			fd, err = dupSocket(f)
			fds = append(fds, fd)
		}
		f.Close()
	}
	if err != nil {
		return 0, fmt.Errorf("evloop: taking a moved connection's descriptor: %w", err)
	}
	gs, err := handover.DecodeConns(m)
	if err != nil {
		return 0, err
	}
	srv, _ := p.env.Settings()
	for _, g := range gs {
		if g.State.Identifying && g.State.Up.Pending > identifyBuffer(srv) {
			return 0, fmt.Errorf("evloop: a moved connection read %d bytes, more than this process's identification buffer (%d)", g.State.Up.Pending, identifyBuffer(srv))
		}
		if g.State.Client != "" {
			if _, err := netip.ParseAddrPort(g.State.Client); err != nil {
				return 0, fmt.Errorf("evloop: a moved connection's client %q: %w", g.State.Client, err)
			}
		}
	}
	byLoop, turn := make([][]adoption, len(p.loops)), int(p.adopted.Add(1))
	for _, g := range gs {
		n := g.State.FDs()
		i := turn % len(p.loops)
		turn++
		byLoop[i] = append(byLoop[i], adoption{g: g, fds: append([]int(nil), fds[g.First:g.First+n]...)})
		for k := g.First; k < g.First+n; k++ {
			fds[k] = -1 // the loop owns it now
		}
	}
	taken := 0
	for i, l := range p.loops {
		if len(byLoop[i]) == 0 {
			continue
		}
		as := byLoop[i]
		if l.call(func() {
			for _, a := range as {
				l.adopt(a)
			}
		}) != nil {
			for _, a := range as {
				for _, fd := range a.fds {
					rawClose(fd)
				}
			}
			return taken, ErrClosed
		}
		taken += len(as)
	}
	return taken, nil
}

// adoption is one connection of a Conns message, for a loop.
type adoption struct {
	g   handover.ConnGroup
	fds []int // client, backend, then the pipes' ends
}

// adopt makes a moved pair one of the loop's, accounted as the old
// process had it: conntrack and the active gauge, the guard's per-source
// count, the target's least-connections count. Its route and target are
// this process's when the configuration still has them; otherwise it
// completes all the same, counted under its protocol.
func (l *Loop) adopt(a adoption) {
	if a.g.State.Identifying {
		l.adoptIdentifying(a)
		return
	}
	env := &l.p.env
	srv, _ := env.Settings()
	st := a.g.State
	c := &conn{l: l, srv: srv, fd: a.fds[0], bfd: a.fds[1], hidx: -1, tcp: a.g.Client == handover.TCPConn, st: stHandover, was: stForward}
	client := unixPeer
	if ap, err := netip.ParseAddrPort(st.Client); err == nil {
		client = net.TCPAddrFromAddrPort(ap)
	}
	c.acc = logging.NewAccess(env.Log, logging.AccessMode{Close: srv.AccessLog, Open: srv.AccessLogOpen}, client)
	c.acc.Start = l.now.Add(-st.Age)
	c.acc.Resume(logging.Carried{Protocol: st.Protocol, Route: st.Route, Fallback: st.Fallback,
		MD: protocols.Metadata{SNI: st.SNI, Host: st.Host, ALPN: st.ALPN}})
	l.own(c)
	env.Conns.Add(c, math.MaxInt) // established: no cap refuses it
	c.counted = true
	env.Stats.Active.Inc()
	c.ip = guard.AddrOf(client)
	c.ticket, c.admitted = env.Guard.Adopt(c.ip), true

	c.entry = routeOf(env, st)
	c.target = st.Target
	c.release = func() {}
	if c.entry.Backend != nil {
		if r := c.entry.Backend.Adopt(st.Target); r != nil {
			c.release = r
		}
	}
	c.idle = st.Idle
	c.last = l.now.UnixNano() - int64(st.IdleFor)
	c.fallback = st.PipeFallbacks
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

// adoptIdentifying makes a moved connection that was still being
// identified one of the loop's: the bytes it had sent are read back from
// their pipe into a buffer of this process, and identification starts
// over them, against this process's routes, with its timeouts from now.
func (l *Loop) adoptIdentifying(a adoption) {
	env := &l.p.env
	srv, _ := env.Settings()
	st := a.g.State
	c := &conn{l: l, srv: srv, fd: a.fds[0], bfd: -1, hidx: -1, tcp: a.g.Client == handover.TCPConn, st: stIdentify}
	client := unixPeer
	if ap, err := netip.ParseAddrPort(st.Client); err == nil {
		client = net.TCPAddrFromAddrPort(ap)
	}
	c.acc = logging.NewAccess(env.Log, logging.AccessMode{Close: srv.AccessLog, Open: srv.AccessLogOpen}, client)
	c.acc.Start = l.now.Add(-st.Age)
	l.own(c)
	l.setRef(c.fd, ref{c: c})
	env.Conns.Add(c, math.MaxInt)
	c.counted = true
	env.Stats.Active.Inc()
	hs := &handshake{fromTrusted: st.Trusted}
	c.hs = hs
	hs.lease = env.Bufs.Lease(identifyBuffer(srv))
	hs.buf = hs.lease.B
	if st.Up.Pipe {
		p := spipe{r: a.fds[1], w: a.fds[2]}
		for hs.prefilled < st.Up.Pending {
			n, err := unix.Read(p.r, hs.buf[hs.prefilled:st.Up.Pending])
			if n <= 0 && err != unix.EINTR {
				break // the pipe held less than it said: identification goes on with what came
			}
			hs.prefilled += max(n, 0)
		}
		p.close()
	}
	c.ip = guard.AddrOf(client)
	c.ticket, c.admitted = env.Guard.Adopt(c.ip), true
	if e := epollCtl(l.ep, unix.EPOLL_CTL_ADD, c.fd, epollConn); e != 0 {
		env.Log.Warn("epoll_ctl failed", "err", e)
		c.finish()
		return
	}
	if c.tcp && srv.TCPKeepAlive > 0 {
		setKeepAlive(c.fd, srv.TCPKeepAlive)
	}
	c.up.readable, c.down.writable = true, true
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
