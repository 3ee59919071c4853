package evloop

import (
	"cmp"
	"context"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"github.com/darkit/protoplex/internal/bufpool"
	"github.com/darkit/protoplex/internal/config"
	"github.com/darkit/protoplex/internal/guard"
	"github.com/darkit/protoplex/internal/identify"
	"github.com/darkit/protoplex/internal/ilist"
	"github.com/darkit/protoplex/internal/logging"
	"github.com/darkit/protoplex/internal/metrics"
	"github.com/darkit/protoplex/internal/proxy"
	"github.com/darkit/protoplex/internal/proxyproto"
	"github.com/darkit/protoplex/internal/rawsys"
	"github.com/darkit/protoplex/internal/routing"
	"github.com/darkit/protoplex/internal/upstream"
	"golang.org/x/sys/unix"
)

// state is where a connection is in its life; the steps run in this order.
type state uint8

const (
	stProxyHeader state = iota + 1 // reading a trusted sender's PROXY header
	stIdentify                     // reading the first flight
	stConnecting                   // the loop's own non-blocking connect is in progress
	stDialing                      // a goroutine dials (host name, source address, transparent)
	stReplay                       // writing the PROXY header and the bytes identification read
	stForward                      // copying both ways
	stHandover                     // off epoll, moving to another process (move_linux.go): sent, or about to be
	stDone
)

const epollConn = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET

// conn is one client connection owned by a loop. Everything but Close runs
// on the loop's goroutine.
type conn struct {
	l   *Loop
	srv *config.Server
	st  state
	fd  int // client
	bfd int // backend, -1 before the dial
	tcp bool

	acc      logging.Access
	ip       netip.Addr
	counted  bool // in Env.Conns and the active gauge
	admitted bool // holds a guard ticket
	ticket   guard.Ticket

	hs *handshake // until forwarding starts

	entry   *routing.Entry
	target  string
	release func()
	idle    time.Duration

	deadline int64 // unix nanos of the loop's clock; the timer, when hidx ≥ 0
	hidx     int
	last     int64 // unix nanos of the last byte moved, for the idle timeout
	id       uint64
	links    ilist.Links[conn] // in the loop's conns

	up, down dir
	reason   proxy.CloseReason
	aborted  bool
	queued   bool
	goDial   bool  // a goroutine dials for the connection: it posts dialedOffLoop, whatever the state
	stay     bool  // it could not move to another process: it drains here
	held     bool  // adopted from another process, on epoll but unread until it starts (move_linux.go)
	was      state // before stHandover: what resume goes back to
	mv       spipe // stHandover before stForward: a copy of the bytes read (or of the replay left), for the new process
	hasMv    bool
	fallback int64
	// dialed is an off-loop dial's outcome that came while the connection
	// was in stHandover: resume takes it, moved drops it.
	dialed *dialOutcome
}

// dialOutcome is what an off-loop dial gave.
type dialOutcome struct {
	nc  net.Conn
	err error
}

// handshake is a connection's state from accept to the end of the replay.
type handshake struct {
	lease       *bufpool.Lease
	buf         []byte // lease.B: identification reads here
	n           int    // bytes in buf while reading a PROXY header
	prefilled   int
	fromTrusted bool
	sess        identify.Session
	res         identify.Result
	rt          *routing.Table

	plan      upstream.Plan
	att       upstream.Attempt
	attStart  time.Time
	dialEnd   int64
	lastErr   error
	connected bool   // the backend's connect is confirmed
	out       []byte // what is being written: the PROXY header, then the replay
	rest      []byte // the replay, while out is the header
	hdr       bool   // out is the PROXY header
	replayEnd int64  // unix nanos: the backend must have taken the replay by then
	cancel    context.CancelFunc
}

// unixPeer is the address of a client of a Unix listener, which has none.
var unixPeer net.Addr = &net.UnixAddr{Net: "unix"}

// startConn is accept's continuation: the guard, then PROXY in or
// identification, all without waiting for an event — the client's first
// bytes are often there already.
func (l *Loop) startConn(fd int, peer netip.AddrPort, ln *listener) {
	env := &l.p.env
	env.Stats.Accepted.Inc()
	srv, trusted := env.Settings()
	c := &conn{l: l, srv: srv, fd: fd, bfd: -1, hidx: -1, tcp: !ln.unix}
	client := unixPeer
	if peer.IsValid() {
		client = net.TCPAddrFromAddrPort(peer)
	}
	c.acc = logging.NewAccess(env.Log, logging.AccessMode{Close: srv.AccessLog, Open: srv.AccessLogOpen}, client)
	c.acc.Start = l.now
	l.own(c)
	l.setRef(fd, ref{c: c})

	// Guard: the global cap first, it costs nothing.
	if !env.Conns.Add(c, srv.MaxConnections) {
		env.CapLog.Warn("connection refused: max_connections reached", "max_connections", srv.MaxConnections)
		c.refuse(metrics.RefusedMaxConnections)
		return
	}
	c.counted = true
	env.Stats.Active.Inc()
	if e := rawsys.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, fd, epollConn); e != 0 {
		env.Log.Warn("epoll_ctl failed", "err", e)
		c.finish()
		return
	}
	if c.tcp && srv.TCPKeepAlive > 0 {
		setKeepAlive(fd, srv.TCPKeepAlive)
	}
	c.up.readable, c.down.writable = true, true // read right after accept
	hs := &handshake{}
	c.hs = hs
	hs.lease = env.Bufs.Lease(identifyBuffer(srv)) // room for a whole TLS record
	hs.buf = hs.lease.B

	// PROXY in: a trusted front load balancer names the real client.
	c.ip = guard.AddrOf(client)
	hs.fromTrusted = srv.AcceptProxy && trusted.Contains(c.ip)
	if hs.fromTrusted {
		c.st = stProxyHeader
		c.setDeadline(l.now.Add(srv.IdentifyTimeout).UnixNano())
		c.readProxyHeader()
		return
	}
	c.admit()
}

// identifyBuffer is the size of a connection's identification buffer:
// room for a whole TLS record.
func identifyBuffer(srv *config.Server) int { return max(srv.BufferSize, identify.MinBuffer) }

func (c *conn) refuse(reason string) {
	c.l.p.env.Stats.Refuse(reason)
	c.acc.Refused(reason)
	c.finish()
}

func (c *conn) readProxyHeader() {
	hs := c.hs
	for c.up.readable {
		if hs.n == len(hs.buf) {
			c.refuse(metrics.RefusedProxyHeader)
			return
		}
		m, e := rawsys.Read(c.fd, hs.buf[hs.n:])
		switch {
		case m > 0:
			hs.n += m
			h, hl, err := proxyproto.Parse(hs.buf[:hs.n])
			if err == proxyproto.ErrIncomplete {
				continue
			}
			if err != nil {
				c.refuse(metrics.RefusedProxyHeader)
				return
			}
			if !h.Local {
				c.acc.Client = net.TCPAddrFromAddrPort(h.Source)
				c.ip = guard.AddrOf(c.acc.Client)
			}
			hs.prefilled = copy(hs.buf, hs.buf[hl:hs.n])
			c.clearDeadline()
			c.admit()
			return
		case e == unix.EAGAIN:
			c.up.readable = false
		case e == unix.EINTR:
		default: // EOF or an error before a whole header
			c.refuse(metrics.RefusedProxyHeader)
			return
		}
	}
}

// admit asks the DDoS guard, then starts identification.
func (c *conn) admit() {
	env := &c.l.p.env
	ticket, reason := env.Guard.Admit(c.ip) // the PROXY header's client, when a trusted front sent one
	if reason != guard.Allowed {
		c.refuse(reason.String())
		return
	}
	c.ticket, c.admitted = ticket, true
	c.identify()
}

// identify starts identification over what the handshake's buffer holds
// (hs.prefilled bytes: after a PROXY header, or those read by the process
// an upgrade moved the connection from).
func (c *conn) identify() {
	env := &c.l.p.env
	hs := c.hs
	hs.rt = env.Routing()
	srv := c.srv
	res, done := hs.sess.Begin(hs.rt.Identify, hs.buf, hs.prefilled, identify.Limits{
		MinBytes:        srv.IdentifyMinBytes,
		Timeout:         srv.IdentifyTimeout,
		ReadTimeout:     srv.IdentifyReadTimeout,
		ServerFirstWait: srv.ServerFirstWait,
		SettleWait:      env.SettleWait,
	}, c.l.now)
	if done {
		c.identified(res)
		return
	}
	c.st = stIdentify
	c.readIdentify()
}

func (c *conn) readIdentify() {
	hs := c.hs
	for c.up.readable {
		m, e := rawsys.Read(c.fd, hs.sess.Free())
		switch {
		case m > 0:
			c.up.drained(len(hs.sess.Free()) > m)
			if res, done := hs.sess.Read(m, c.l.now); done {
				c.identified(res)
				return
			}
		case m == 0:
			c.identified(hs.sess.Closed(io.EOF))
			return
		case e == unix.EAGAIN:
			c.up.readable = false
		case e == unix.EINTR:
		default:
			c.identified(hs.sess.Closed(os.NewSyscallError("read", e)))
			return
		}
	}
	c.setDeadline(hs.sess.Deadline().UnixNano())
}

// identified takes identification's answer: refuse, hand to an in-process
// handler, or dial the route's backend.
func (c *conn) identified(res identify.Result) {
	env := &c.l.p.env
	hs := c.hs
	c.clearDeadline()
	hs.res = res
	first := hs.buf[:res.N]
	if c.srv.AcceptProxy && !hs.fromTrusted && res.N > 0 && proxyproto.Claims(first) {
		c.refuse(metrics.RefusedProxyHeader) // an untrusted source must not claim another's address
		return
	}
	if res.Failure != identify.OK && !res.Fallback { // the fallback route is normal traffic
		env.Stats.IdentifyFailed(res.Failure)
		if res.Failure != identify.ClientClosed || res.N > 0 {
			env.Guard.IdentifyFailed(c.ip) // feeds the DDoS guard
		}
	}
	if res.Route == nil {
		c.acc.Unidentified(res)
		c.finish()
		return
	}

	// Route.
	e := hs.rt.Entries[res.Route.Index]
	c.entry = e
	e.Stats.Identify(c.l.now.Sub(c.acc.Start))
	c.acc.Routed(e.Proto, e.Label, res, first)
	if h := e.Proto.Handler; h != nil {
		c.handOff(h, first)
		return
	}

	// Dial.
	c.idle = cmp.Or(e.Proto.IdleTimeout, c.srv.IdleTimeout) // the route's own, else the server's
	hs.plan = e.Backend.Plan()
	hs.dialEnd = c.l.now.Add(c.srv.DialTimeout).UnixNano()
	c.setDeadline(hs.dialEnd)
	c.nextAttempt()
}

// handOff gives the connection to an in-process handler as a net.Conn that
// first yields the bytes identification read; it leaves the loop.
func (c *conn) handOff(h func(net.Conn), first []byte) {
	env := &c.l.p.env
	l := c.l
	_ = rawsys.EpollCtl(l.ep, unix.EPOLL_CTL_DEL, c.fd, 0)
	l.clearRef(c.fd)
	f := os.NewFile(uintptr(c.fd), "")
	nc, err := net.FileConn(f) // a duplicate: f's own fd closes below
	f.Close()
	c.fd = -1
	if err != nil {
		env.Log.Warn("handing a connection to its handler failed", "err", err)
		c.finish()
		return
	}
	rc := proxy.NewReplayConn(nc, first) // copies first
	c.hs.lease.Release()
	c.hs = nil
	env.Conns.Add(nc, math.MaxInt) // tracked before c leaves, so a drain never sees a gap
	env.Conns.Remove(c)
	l.disown(c)
	c.st = stDone
	go func() {
		defer c.acc.Log()
		defer env.Stats.Active.Dec()
		defer env.Conns.Remove(nc)
		defer env.Guard.Release(c.ticket)
		c.acc.Opened("")
		h(rc)
	}()
}

// nextAttempt tries the plan's next target, or ends the connection when
// none is left or the dial timeout passed.
func (c *conn) nextAttempt() {
	hs := c.hs
	for {
		if c.l.now.UnixNano() >= hs.dialEnd {
			c.dialFailed(cmp.Or(hs.lastErr, error(os.ErrDeadlineExceeded)))
			return
		}
		a, ok := hs.plan.Next()
		if !ok {
			c.dialFailed(cmp.Or(hs.lastErr, error(os.ErrDeadlineExceeded)))
			return
		}
		hs.att, hs.attStart, hs.connected = a, c.l.p.env.Now(), false
		var fd int
		var err error
		var e syscall.Errno
		connecting := false
		switch {
		case a.Pooled != nil:
			fd, err = takeFD(a.Pooled)
		case a.Addr.IsValid():
			fd, e = rawConnect(a.Addr, !c.l.p.env.QuickAck)
			connecting = true
		case a.Unix != "":
			fd, e = rawsys.ConnectUnix(a.Unix)
		default:
			c.dialOffLoop(a)
			return
		}
		if e != 0 {
			err = dialError(a, e)
		}
		if err != nil {
			c.attemptFailed(err)
			continue
		}
		c.connectedTo(fd, connecting)
		return
	}
}

// connectedTo takes the backend socket, connected or (connecting) with
// its connect in progress, and starts the replay: for a connect in
// progress an optimistic write, as on loopback the handshake is often done.
func (c *conn) connectedTo(fd int, connecting bool) {
	c.hs.connected = !connecting
	c.st = stConnecting
	if !c.backendFD(fd) {
		return
	}
	if !connecting {
		c.dialOK()
	}
	c.startReplay()
}

// backendFD registers the backend socket; false when the connection ended.
func (c *conn) backendFD(fd int) bool {
	c.bfd = fd
	c.l.setRef(fd, ref{c: c})
	if e := rawsys.EpollCtl(c.l.ep, unix.EPOLL_CTL_ADD, fd, epollConn); e != 0 {
		c.attemptFailed(os.NewSyscallError("epoll_ctl", e))
		c.nextAttempt()
		return false
	}
	c.up.writable = true
	return true
}

func dialError(a upstream.Attempt, e syscall.Errno) error {
	if a.Unix != "" {
		return &net.OpError{Op: "dial", Net: "unix", Addr: &net.UnixAddr{Name: a.Unix, Net: "unix"}, Err: os.NewSyscallError("connect", e)}
	}
	return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(a.Addr), Err: os.NewSyscallError("connect", e)}
}

// attemptFailed reports a failed attempt and closes its socket.
func (c *conn) attemptFailed(err error) {
	hs := c.hs
	hs.plan.Done(hs.att, c.l.since(hs.attStart), err)
	if hs.att.Pooled != nil {
		hs.att.Pooled.Close()
	}
	hs.lastErr = err
	if c.bfd >= 0 {
		c.l.clearRef(c.bfd)
		rawsys.Close(c.bfd)
		c.bfd = -1
	}
}

func (c *conn) dialFailed(err error) { // each failed target is logged by its backend set
	c.acc.DialFailed(err)
	c.entry.Stats.DialError.Inc()
	c.finish()
}

// dialOK reports the attempt's success; the replay's own deadline starts.
func (c *conn) dialOK() {
	hs := c.hs
	c.release = hs.plan.Done(hs.att, c.l.since(hs.attStart), nil)
	c.target = hs.att.Target
	c.acc.Opened(c.target)
	hs.replayEnd = c.l.now.Add(c.srv.DialTimeout).UnixNano()
	c.setDeadline(hs.replayEnd) // a backend that never reads cannot hold the pair
}

// dialOffLoop dials on a goroutine and hands the socket back to the loop.
func (c *conn) dialOffLoop(a upstream.Attempt) {
	env := &c.l.p.env
	hs := c.hs
	c.st = stDialing
	ctx, cancel := context.WithDeadline(env.Ctx, time.Unix(0, hs.dialEnd))
	hs.cancel = cancel
	env.Conns.Dialing(c, cancel) // a drain's close-all cancels the dial too
	c.goDial = true
	plan, client, l := &hs.plan, c.acc.Client, c.l
	go func() {
		nc, err := plan.Dial(ctx, a, client)
		if !l.post(func() { c.dialedOffLoop(hs, nc, err) }) && err == nil {
			nc.Close() // the loop stopped: nobody takes it
		}
	}()
}

// dialedOffLoop takes an off-loop dial's outcome on the loop. hs is the
// dial's own: a connection that moved to another process meanwhile has
// none left.
func (c *conn) dialedOffLoop(hs *handshake, nc net.Conn, err error) {
	c.goDial = false
	hs.cancel()
	c.l.now = c.l.p.env.Now()
	switch c.st {
	case stHandover: // its batch is out: resume takes the outcome, or moved drops it
		c.dialed = &dialOutcome{nc: nc, err: err}
		return
	case stDone: // it moved (the dial was abandoned): the new process dials its own
		c.dropDial(hs, dialOutcome{nc: nc, err: err})
		return
	}
	if c.aborted {
		if err == nil {
			hs.plan.Done(hs.att, c.l.since(hs.attStart), nil)()
			nc.Close()
		}
		c.dialFailed(cmp.Or(err, context.Canceled))
		return
	}
	if err != nil {
		c.attemptFailed(err)
		c.nextAttempt()
		return
	}
	fd, err := takeFD(nc)
	if err != nil {
		c.attemptFailed(err)
		c.nextAttempt()
		return
	}
	c.connectedTo(fd, false)
}

// takeFD moves a connected net.Conn's socket into the loop.
func takeFD(nc net.Conn) (int, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		nc.Close()
		return -1, ErrUnsupported
	}
	fd, err := dupSocket(sc)
	nc.Close()
	if err != nil {
		return -1, err
	}
	return fd, nil
}

// dupSocket duplicates sc's descriptor, close-on-exec, leaving its flags
// alone (an os.File's Fd would make the socket blocking).
func dupSocket(sc syscall.Conn) (int, error) {
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, dupErr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	return fd, dupErr
}

// startReplay writes the PROXY header, if the route sends one, then the
// bytes identification read; the header is sent with MSG_MORE, so both
// leave in one segment.
func (c *conn) startReplay() {
	hs := c.hs
	hs.out, hs.rest = hs.buf[:hs.res.N], nil
	if c.entry.Backend.SendsProxy() {
		hs.out, hs.rest = c.entry.Backend.ProxyHeader(c.acc.Client, localAddr(c.fd)), hs.out
		hs.hdr = true
	}
	if hs.connected {
		c.st = stReplay
	}
	c.writeReplay()
}

func (c *conn) writeReplay() {
	hs := c.hs
	for len(hs.out) > 0 {
		n, e := rawsys.Send(c.bfd, hs.out, hs.hdr && len(hs.rest) > 0)
		if n > 0 {
			if !hs.connected {
				hs.connected = true
				c.st = stReplay
				c.dialOK()
			}
			hs.out = hs.out[n:]
			if !hs.hdr {
				c.up.n += int64(n)
			}
			if len(hs.out) == 0 && hs.hdr {
				hs.out, hs.rest, hs.hdr = hs.rest, nil, false
			}
			continue
		}
		if e == unix.EAGAIN {
			c.up.writable = false
			return // EPOLLOUT: the connect finished or the backend read
		}
		if e == unix.EINTR {
			continue
		}
		if !hs.connected { // the connect failed
			c.attemptFailed(dialError(hs.att, e))
			c.nextAttempt()
			return
		}
		c.reason = proxy.Error
		c.finish()
		return
	}
	if !hs.connected {
		return // nothing to replay: the connect's EPOLLOUT tells when it is done
	}
	c.startForward()
}

// connectDone: the backend socket became writable or failed while
// connecting.
func (c *conn) connectDone() {
	if e := rawsys.SoError(c.bfd); e != 0 {
		c.attemptFailed(dialError(c.hs.att, e))
		c.nextAttempt()
		return
	}
	c.hs.connected = true
	c.st = stReplay
	c.dialOK()
	c.writeReplay()
}

// startForward gives the identification buffer back (an idle connection
// holds none) and starts copying.
func (c *conn) startForward() {
	c.hs.lease.Release()
	c.hs = nil
	c.st = stForward
	c.last = c.l.now.UnixNano()
	if c.idle > 0 {
		c.setDeadline(c.last + int64(c.idle))
	} else {
		c.clearDeadline()
	}
	c.pumpBoth()
}

// event is epoll's news about one of the connection's sockets.
func (c *conn) event(fd int, ev uint32) {
	backend := fd == c.bfd
	src, dst := &c.up, &c.down // the directions reading and writing fd
	if backend {
		src, dst = &c.down, &c.up
	}
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		src.readable = true
	}
	if ev&unix.EPOLLRDHUP != 0 {
		src.rdhup = true
	}
	if ev&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		dst.writable = true
	}
	switch c.st {
	case stProxyHeader:
		if !backend {
			c.readProxyHeader()
		}
	case stIdentify:
		if !backend {
			c.readIdentify()
		}
	case stConnecting:
		if backend && ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
			c.connectDone()
		}
	case stDialing:
		// The client's bytes wait in its socket until the goroutine's dial
		// comes back (dialedOffLoop).
	case stReplay:
		if backend && c.up.writable {
			c.writeReplay()
		}
	case stForward:
		// A peer that fails while its direction waits for the other side to
		// read ends the pair now: it will never be read again.
		if ev&unix.EPOLLERR != 0 && src.blocked() {
			c.reason = proxy.Error
			c.finish()
			return
		}
		c.pumpBoth()
	case stHandover:
		// Off epoll: an event read in the same batch as the detach. The
		// readiness it set is taken again by resume, if the pair stays.
	}
}

// timeout is the connection's timer firing.
func (c *conn) timeout() {
	switch c.st {
	case stProxyHeader:
		c.refuse(metrics.RefusedProxyHeader)
	case stIdentify:
		res, done := c.hs.sess.Expire(c.l.now)
		if done {
			c.identified(res)
			return
		}
		c.setDeadline(c.hs.sess.Deadline().UnixNano())
	case stConnecting:
		c.attemptFailed(dialError(c.hs.att, unix.ETIMEDOUT))
		c.dialFailed(&net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded})
	case stDialing:
		// The dial's context has the same deadline: dialedOffLoop ends it.
	case stReplay:
		c.reason = proxy.Error // the backend never read the replay
		c.finish()
	case stForward:
		if c.idle <= 0 {
			return
		}
		if next := c.last + int64(c.idle); next > c.l.now.UnixNano() {
			c.setDeadline(next)
			return
		}
		c.reason = proxy.IdleTimeout
		c.finish()
	case stHandover:
		// Its deadline was cleared when it left epoll; resume sets it again.
	}
}

// RemoteAddr is the client's address as accepted. Only conntrack's Add
// calls it, on the loop, before a PROXY header may change acc.Client.
func (c *conn) RemoteAddr() net.Addr { return c.acc.Client }

// Close ends the connection from outside the loop (a drain's deadline);
// it returns before the connection is closed.
func (c *conn) Close() error {
	c.l.post(c.abort)
	return nil
}

func (c *conn) abort() {
	if c.st == stDone || c.aborted {
		return
	}
	c.aborted = true
	c.reason = proxy.Aborted
	// Each state ends as the goroutine path's would when its socket is
	// closed under it, so the drain is counted and logged the same way.
	switch c.st {
	case stDialing:
		c.hs.cancel() // dialedOffLoop finishes
	case stProxyHeader:
		c.refuse(metrics.RefusedProxyHeader)
	case stIdentify:
		res := c.hs.sess.Closed(net.ErrClosed)
		c.l.p.env.Stats.IdentifyFailed(res.Failure)
		c.acc.Unidentified(res)
		c.finish()
	case stConnecting:
		c.attemptFailed(context.Canceled)
		c.dialFailed(context.Canceled)
	case stHandover:
		// Its sockets may be in a message to the new process: nothing is
		// closed under it. It moves (and is no longer ours to end) or it
		// resumes here, which finishes it as aborted.
	default:
		c.finish()
	}
}

// finish closes everything the connection holds and writes its records.
func (c *conn) finish() {
	if c.st == stDone {
		return
	}
	c.st = stDone
	l := c.l
	env := &l.p.env
	c.clearDeadline()
	for _, fd := range [2]int{c.fd, c.bfd} {
		if fd >= 0 {
			l.clearRef(fd)
			rawsys.Close(fd)
		}
	}
	c.fd, c.bfd = -1, -1
	c.up.free(l)
	c.down.free(l)
	if c.hs != nil {
		c.hs.lease.Release()
		c.hs = nil
	}
	if c.release != nil { // forwarded: the dial succeeded
		fs := proxy.Stats{Up: c.up.n, Down: c.down.n, Reason: c.reason, PipeFallbacks: c.fallback}
		env.Stats.Forwarded(c.entry.Stats, fs)
		if c.entry.Backend != nil { // nil: an adopted pair whose route is gone
			c.entry.Backend.Forwarded(c.target, fs.Up, fs.Down)
		}
		c.acc.Forwarded(c.target, fs)
		c.release()
	}
	if c.admitted {
		env.Guard.Release(c.ticket)
	}
	if c.counted {
		env.Conns.Remove(c)
		env.Stats.Active.Dec()
	}
	c.acc.Log()
	l.disown(c)
}

func setKeepAlive(fd int, d time.Duration) {
	secs := max(int(d/time.Second), 1)
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, secs)
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, secs)
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9)
}

// localAddr is the address the client connected to (for a PROXY header).
func localAddr(fd int) net.Addr {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: sa.Addr[:], Port: sa.Port}
	case *unix.SockaddrInet6:
		return &net.TCPAddr{IP: sa.Addr[:], Port: sa.Port}
	case *unix.SockaddrUnix:
		return &net.UnixAddr{Name: sa.Name, Net: "unix"}
	}
	return nil
}
