package udp

import (
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// loopBatch bounds the datagrams one readiness reads from a socket, so a
// busy flow or listener cannot starve the loop's others (the socket is
// watched level-triggered: what is left wakes the loop again).
const loopBatch = 64

// driver is a listener run by an event loop (Options.Loops): the loop's
// goroutine reads the listening socket, owns the flow table and reads the
// flows' upstream sockets; every call below runs on it.
type driver struct {
	lp      Loop
	fd      int // a duplicate of the listener's socket, read and written raw
	buf     []byte
	sa      unix.RawSockaddrAny
	oob     cmsgBuf // a read's UDP_GRO segment size, a reply's UDP_SEGMENT
	v6      bool    // the socket is AF_INET6: replies go to IPv6 (or mapped) addresses
	noGSO   bool    // the kernel cannot send trains from this socket (EIO): cut them here
	stopped bool
	// An upgrade's (move_linux.go): paused, the socket is not read; stay
	// is the flows that cannot move, tried once.
	paused bool
	stay   map[*flow]bool
}

// onLoop readies ln to run on lp: the duplicate of its socket the loop
// reads; false when it cannot be had (ln then runs with a goroutine).
func (ln *listener) onLoop(lp Loop) bool {
	rc, err := ln.conn.SyscallConn()
	if err != nil {
		return false
	}
	fd := -1
	var dupErr error
	if err := rc.Control(func(s uintptr) { fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || dupErr != nil {
		return false
	}
	_ = unix.SetNonblock(fd, true)
	ln.drv = &driver{lp: lp, fd: fd, buf: make([]byte, maxDatagram), v6: !isIPv4Socket(fd)}
	return true
}

// leaveLoop closes what onLoop opened, for a listener never started.
func (ln *listener) leaveLoop() {
	if ln.drv != nil {
		rawClose(ln.drv.fd)
	}
}

// startLoop starts ln on its loop: the loop watches its socket and sweeps
// its table every period.
func (ln *listener) startLoop() {
	lp := ln.drv.lp
	ok := lp.Post(func() {
		if err := lp.Watch(ln.drv.fd, ln.readable); err != nil {
			ln.e.opt.Log.Error("udp listener cannot join its event loop", "addr", ln.addr, "err", err)
			ln.stopOnLoop()
			return
		}
		lp.After(ln.e.period, ln.tick)
	})
	if !ok {
		// The loops stopped meanwhile (the engine is being closed): the
		// listener ends here, nothing else runs its work.
		ln.e.opt.Log.Error("udp listener cannot join its event loop", "addr", ln.addr, "err", "the loop has stopped")
		ln.stopOnLoop()
	}
}

// readable reads the listener's waiting datagrams, a batch at a time.
func (ln *listener) readable() {
	d := ln.drv
	for i := 0; i < loopBatch && !d.stopped; i++ {
		n, client, err := rawRecvfrom(d.fd, d.buf, &d.sa)
		if err == unix.EAGAIN {
			return
		}
		if err != 0 || !client.IsValid() {
			continue // an ICMP error for an earlier reply: the socket still works
		}
		ln.datagram(client, d.buf[:n], ln.e.now())
	}
}

// tick sweeps the table every period, on the loop's timers.
func (ln *listener) tick() {
	if ln.drv.stopped {
		return
	}
	ln.sweep(ln.e.now())
	ln.drv.lp.After(ln.e.period, ln.tick)
}

// stopLoop stops a listener run by a loop: on the loop, or here when the
// loop has stopped already (nothing else runs ln's work then).
func (ln *listener) stopLoop() {
	if !ln.drv.lp.Post(ln.stopOnLoop) {
		ln.stopOnLoop()
	}
}

// stopOnLoop ends every flow, stops watching the socket and closes it;
// the last listener of a group gives the loops back.
func (ln *listener) stopOnLoop() {
	d := ln.drv
	if d.stopped {
		return
	}
	d.stopped = true
	ln.mu.Lock()
	ln.stopped = true
	ln.mu.Unlock()
	for _, f := range ln.t.flows {
		ln.end(f, "closed")
	}
	d.lp.Unwatch(d.fd)
	unix.Close(d.fd)
	e := ln.e
	if h := ln.head; h.loopsLeft.Add(-1) == 0 && h.releaseLoops != nil {
		// Giving the loops back may stop them: not from one of them.
		e.wg.Add(1)
		go func() { defer e.wg.Done(); h.releaseLoops() }()
	}
	close(ln.done)
	e.wg.Done()
}

// watchUp starts forwarding f's replies from its upstream socket.
func (ln *listener) watchUp(f *flow) {
	up := f.up.(*rawUp)
	if err := ln.drv.lp.Watch(up.fd, func() { ln.upReadable(f, up) }); err != nil {
		ln.end(f, "closed")
	}
}

// upReadable forwards f's waiting replies to its client. With UDP_GRO a
// read may be a train of the backend's datagrams (a QUIC server's GSO
// burst), which goes on to the client as one train (sendLoop).
func (ln *listener) upReadable(f *flow, up *rawUp) {
	d := ln.drv
	for i := 0; i < loopBatch && !up.closed; i++ {
		var n, seg int
		var err syscall.Errno
		if up.gro {
			n, seg, err = rawRecvGRO(up.fd, d.buf, &d.oob)
		} else {
			n, err = rawRead(up.fd, d.buf)
		}
		switch err {
		case 0:
		case unix.EAGAIN:
			return
		case unix.ECONNREFUSED, unix.EINTR, unix.EMSGSIZE:
			continue // an ICMP error for an earlier datagram, a train too large: the flow goes on
		default:
			ln.end(f, "closed")
			return
		}
		if ln.reply(f, d.buf[:n], seg) {
			ln.end(f, "answered")
			return
		}
	}
}

// sendLoop writes b to client from the listener's socket, without
// waiting: a full send buffer drops the datagram, as the network may. b is
// a train of datagrams of seg bytes when seg is above 0 and below len(b):
// one sendmsg with UDP_SEGMENT, or, where the kernel refuses the train,
// one sendto per datagram: for this train (EINVAL: a segment above the
// client's path MTU), or from then on (EIO: the device cannot checksum a
// train).
func (ln *listener) sendLoop(b []byte, client netip.AddrPort, seg int) error {
	d := ln.drv
	if seg > 0 && seg < len(b) {
		if !d.noGSO {
			switch e := rawSendGSO(d.fd, b, seg, client, d.v6, &d.oob); e {
			case 0:
				return nil
			case unix.EAGAIN, unix.ENOBUFS:
				return e
			case unix.EIO:
				d.noGSO = true
			}
		}
		var err error
		eachSegment(b, seg, func(s []byte) {
			if e := rawSendto(d.fd, s, client, d.v6); e != 0 && err == nil {
				err = e
			}
		})
		return err
	}
	if e := rawSendto(d.fd, b, client, d.v6); e != 0 {
		return e
	}
	return nil
}

// isIPv4Socket reports whether fd is an AF_INET socket.
func isIPv4Socket(fd int) bool {
	sa, err := unix.Getsockname(fd)
	_, ok := sa.(*unix.SockaddrInet4)
	return err == nil && ok
}

// dialLoop is dialDatagram for a flow on a loop: a bare descriptor the
// loop watches, not in the runtime's poller; with UDP_GRO when so asks.
func (ln *listener) dialLoop(ap netip.AddrPort, so upSocket) (upConn, error) {
	fd, err := rawDatagramSocket(ap, so)
	if err != nil {
		return nil, err
	}
	return &rawUp{fd: fd, lp: ln.drv.lp, gro: so.gro && setGRO(fd)}, nil
}

// rawUp is a flow's upstream socket on a loop.
type rawUp struct {
	fd     int
	lp     Loop
	gro    bool // UDP_GRO is on: a read may be a train (rawRecvGRO)
	closed bool
}

func (u *rawUp) Read(b []byte) (int, error) {
	n, e := rawRead(u.fd, b)
	if e != 0 {
		return 0, e
	}
	return n, nil
}

func (u *rawUp) Write(b []byte) (int, error) {
	n, e := rawWrite(u.fd, b)
	if e != 0 {
		return 0, e
	}
	return n, nil
}

// Close stops watching the socket and closes it; on the loop.
func (u *rawUp) Close() error {
	if u.closed {
		return nil
	}
	u.closed = true
	u.lp.Forget(u.fd)
	rawClose(u.fd)
	return nil
}

func (u *rawUp) SyscallConn() (syscall.RawConn, error) { return nil, errNoRawConn }
