package udp

import (
	"net"
	"net/netip"
	"slices"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/darkit/protoplex/internal/metrics"
	"github.com/darkit/protoplex/internal/rawsys"
)

// loopBatch bounds the datagrams one readiness reads from a socket, so a
// busy flow or listener cannot starve the loop's others (the socket is
// watched level-triggered: what is left wakes the loop again).
const loopBatch = 64

// driver is a listener run by an event loop (Options.Loops): the loop's
// goroutine reads the listening socket, owns the flow table and reads the
// flows' upstream sockets; every call below runs on it.
type driver struct {
	lp Loop
	fd int      // a duplicate of the listener's socket, read and written raw
	rx *rxBatch // the datagrams of a read (recvmmsg; slot 0 alone for a GRO read)
	tx *txBatch // replies waiting to leave the listener's socket (sendmmsg)
	// ending is the flows answered by a reply still in tx: they end (and
	// are counted and logged) once it is sent, taken out of the table
	// meanwhile.
	ending []*flow
	unhook func() // takes flushSends off the loop's before-wait work
	// up is a run of one flow's datagrams from one read of the listener,
	// to go up together (queueUp); reading: a read's datagrams are being
	// handled, and their slots stay as they are.
	up      upRun
	reading bool
	oob     rawsys.Cmsg // a read's UDP_GRO segment size, a reply's UDP_SEGMENT
	v6      bool        // the socket is AF_INET6: replies go to IPv6 (or mapped) addresses
	noGSO   bool        // the kernel cannot send trains from this socket (EIO): cut them here
	stopped bool
	pool    *upPool // upstream sockets of answered DNS flows, for the next ones
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
	rx, err := newRxBatch()
	if err != nil {
		rawsys.Close(fd)
		return false
	}
	tx, err := newTxBatch()
	if err != nil {
		rx.free()
		rawsys.Close(fd)
		return false
	}
	ln.drv = &driver{lp: lp, fd: fd, rx: rx, tx: tx, v6: !isIPv4Socket(fd), pool: newUpPool()}
	return true
}

// leaveLoop closes what onLoop opened, for a listener never started.
func (ln *listener) leaveLoop() {
	if d := ln.drv; d != nil {
		rawsys.Close(d.fd)
		d.rx.free()
		d.tx.free()
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
		ln.drv.unhook = lp.BeforeWait(ln.flushSends)
		lp.After(ln.e.period, ln.tick)
	})
	if !ok {
		// The loops stopped meanwhile (the engine is being closed): the
		// listener ends here, nothing else runs its work.
		ln.e.opt.Log.Error("udp listener cannot join its event loop", "addr", ln.addr, "err", "the loop has stopped")
		ln.stopOnLoop()
	}
}

// readable reads the listener's waiting datagrams, recvBatch at a time
// (recvmmsg), at most loopBatch.
func (ln *listener) readable() {
	d := ln.drv
	for read := 0; read < loopBatch && !d.stopped; {
		ask := min(recvBatch, loopBatch-read)
		n, err := rawsys.Recvmmsg(d.fd, d.rx.prepare(ask, true))
		if err == unix.EAGAIN {
			return
		}
		if err != 0 {
			read++ // an ICMP error for an earlier reply: the socket still works
			continue
		}
		now := ln.e.now()
		d.reading = true
		for i := 0; i < n && !d.stopped; i++ {
			if b, client := d.rx.msg(i); client.IsValid() {
				ln.datagram(client, b, now)
			}
		}
		d.reading = false
		ln.flushUp() // before the next read reuses the slots
		if n < ask {
			return // the queue was empty: no call to learn it again (what comes wakes the loop)
		}
		read += n
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
	ln.flushSends()
	if d.unhook != nil {
		d.unhook()
	}
	d.stopped = true
	ln.mu.Lock()
	ln.stopped = true
	ln.mu.Unlock()
	for _, f := range ln.t.flows {
		ln.end(f, "closed")
	}
	ln.emptyPool()
	d.lp.Unwatch(d.fd)
	unix.Close(d.fd)
	// Nothing reads or sends for ln from here: its flows ended, its
	// sockets are closed and out of the loop.
	d.rx.free()
	d.tx.free()
	e := ln.e
	if h := ln.head; h.loopsLeft.Add(-1) == 0 && h.releaseLoops != nil {
		// Giving the loops back may stop them: not from one of them.
		e.wg.Add(1)
		go func() { defer e.wg.Done(); h.releaseLoops() }()
	}
	close(ln.done)
	e.wg.Done()
}

// attachUp gives f's upstream socket to f, before f sends anything: the
// socket's replies are f's from now on, checked by f's query guard when f's
// route reuses sockets (the guard of a pooled socket starts empty again).
func (ln *listener) attachUp(f *flow) {
	up := f.up.(*rawUp)
	up.f = f
	if up.reuse != nil {
		up.reuse.guard.reset(f.rs.pool)
	}
}

// watchUp starts forwarding f's replies from its upstream socket (one
// adopted from an upgrade, too); a socket from the pool is watched
// already.
func (ln *listener) watchUp(f *flow) {
	up := f.up.(*rawUp)
	up.f = f
	if up.watched {
		return
	}
	if err := ln.drv.lp.Watch(int(up.fd), func() { ln.upReadable(up) }); err != nil {
		ln.end(f, "closed")
		return
	}
	up.watched = true
}

// upReadable forwards the waiting replies on up to its flow's client,
// recvBatch at a time (recvmmsg), at most loopBatch. With UDP_GRO a read
// is one datagram or a train of the backend's (upReadableGRO).
func (ln *listener) upReadable(up *rawUp) {
	if up.gro {
		ln.upReadableGRO(up)
		return
	}
	d := ln.drv
	for read := 0; read < loopBatch && !up.closed; {
		ask := min(recvBatch, loopBatch-read, owed(up))
		n, err := ln.upRecv(up, ask)
		if !ln.upRead(up, err) {
			return
		}
		if err != 0 {
			read++
			continue
		}
		for i := range n {
			b, _ := d.rx.msg(i)
			if ln.upDatagram(up, b, 0) {
				ln.afterEnd(up, n-1-i)
				return
			}
		}
		if n < ask {
			return // the queue was empty
		}
		read += n
	}
}

// owed is how many datagrams a read of up asks for: as many replies as
// its flow awaits (udp_responses; at least 1), recvBatch for a flow that
// awaits no count, 1 while up waits in the pool (what comes is dropped).
func owed(up *rawUp) int {
	switch f := up.f; {
	case f == nil:
		return 1
	case f.rs.responses > 0:
		return int(max(min(f.owed.Load(), recvBatch), 1))
	}
	return recvBatch
}

// upRecv reads up to ask datagrams of up into the read slots: one read(2)
// for one (a DNS flow's one answer: recvmmsg costs more for a single
// message), else recvmmsg.
func (ln *listener) upRecv(up *rawUp, ask int) (int, syscall.Errno) {
	rx := ln.drv.rx
	hs := rx.prepare(ask, false)
	if ask > 1 {
		return rawsys.Recvmmsg(int(up.fd), hs)
	}
	k, err := rawsys.Read(int(up.fd), rx.buf[:maxDatagram])
	if err != 0 {
		return -1, err
	}
	hs[0].Len = uint32(k)
	return 1, 0
}

// upReadableGRO is upReadable for a socket with UDP_GRO: a read may be a
// train of the backend's datagrams (a QUIC server's GSO burst), which goes
// on to the client as one train (sendLoop).
func (ln *listener) upReadableGRO(up *rawUp) {
	d := ln.drv
	buf := d.rx.buf[:maxDatagram]
	for i := 0; i < loopBatch && !up.closed; i++ {
		n, seg, err := rawsys.RecvGRO(int(up.fd), buf, &d.oob)
		if !ln.upRead(up, err) {
			return
		}
		if err == 0 && ln.upDatagram(up, buf[:n], seg) {
			return
		}
	}
}

// upRead is what a read of up that failed with err leaves: false when
// the socket has nothing more to read (EAGAIN) or failed, and its flow
// ended (or, pooled, it was closed); true when the read got datagrams, or
// lost one to an ICMP error or a train too large, and the flow goes on.
func (ln *listener) upRead(up *rawUp, err syscall.Errno) bool {
	switch err {
	case 0, unix.ECONNREFUSED, unix.EINTR, unix.EMSGSIZE:
		return true
	case unix.EAGAIN:
		return false
	}
	if f := up.f; f != nil {
		ln.end(f, "closed")
	} else {
		ln.unpool(up)
	}
	return false
}

// upDatagram forwards b, read from up, to its flow's client; true when it
// was the flow's last awaited reply and the flow ended. A reply the flow's
// query guard refuses (a late or duplicate reply of an earlier flow on a
// reused socket), or one that comes while up waits in the pool, is
// dropped, and counted.
func (ln *listener) upDatagram(up *rawUp, b []byte, seg int) bool {
	f := up.f
	switch {
	case f == nil:
		ln.e.dropped(metrics.UDPIdleSocket)
		return false
	case up.reuse != nil && up.reuse.guard.on && !up.reuse.guard.answers(b, ln.e.seed):
		ln.e.dropped(metrics.UDPStaleReply)
		return false
	}
	if !ln.reply(f, b, seg) {
		return false
	}
	if d := ln.drv; d.tx.n > 0 && d.tx.flows[d.tx.n-1] == f {
		// Its reply waits in the batch: the flow leaves the table now and
		// ends once the reply is sent (flushSends), counted first.
		if ln.remove(f) {
			d.ending = append(d.ending, f)
		}
		return true
	}
	ln.end(f, "answered")
	return true
}

// afterEnd: up's flow ended answered with more datagrams of one read
// behind its last awaited reply. No flow awaits them: they are dropped as
// the next read would (a socket kept for reuse counts them, a closed one
// never reads them).
func (ln *listener) afterEnd(up *rawUp, more int) {
	if up.reuse == nil {
		return
	}
	for range more {
		ln.e.dropped(metrics.UDPIdleSocket)
	}
}

// ask records b, a datagram f is about to send up, in f's query guard;
// false when the guard refuses it (it must not go up).
func (ln *listener) ask(f *flow, b []byte) bool {
	up, ok := f.up.(*rawUp)
	return !ok || up.reuse == nil || !up.reuse.guard.on || up.reuse.guard.ask(b, ln.e.seed)
}

// upFor is a socket connected to ap for a flow of r at now: one from the pool
// when r reuses sockets and one waits there, else a new one.
func (ln *listener) upFor(r *Route, ap netip.AddrPort, now time.Time) (upConn, error) {
	if r.state.pool {
		p := ln.drv.pool
		ln.expirePool(r.state.tb, now)
		if up := p.take(r.state.tb, ap); up != nil {
			ln.e.pooled(-1)
			return up, nil
		}
	}
	up, err := ln.dialLoop(ap, upSocketFor(r.state.responses))
	if err == nil && r.state.pool {
		up.(*rawUp).reuse = &reusable{pool: pooled{target: ap}}
	}
	return up, err
}

// recycle puts the socket of f, which ended answered, in the pool; false
// when it is not for reuse (the caller closes it): f's route does not
// reuse sockets, a query is unanswered, the table f was routed by is no
// longer the current one, or the listener is stopping.
func (ln *listener) recycle(f *flow) bool {
	d := ln.drv
	up, ok := f.up.(*rawUp)
	if d == nil || !ok || up.reuse == nil || !f.rs.pool || d.stopped || up.closed || !up.watched || !up.reuse.guard.settled() {
		return false
	}
	tb := ln.e.table()
	if f.rs.tb != tb {
		return false
	}
	now := time.Unix(0, f.last.Load()) // its answer's time: no clock read per flow
	ln.expirePool(tb, now)
	ok, out := d.pool.put(tb, up, now)
	if !ok {
		return false
	}
	up.f = nil
	ln.e.pooled(1)
	if out != nil {
		ln.e.pooled(-1)
		out.Close()
	}
	return true
}

// expirePool closes the pooled sockets idle past PoolIdle, or all of them
// when tb is not the pool's table.
func (ln *listener) expirePool(tb *Table, now time.Time) {
	d := ln.drv
	for up := d.pool.stale(tb, now); up != nil; up = d.pool.stale(tb, now) {
		ln.e.pooled(-1)
		up.Close()
	}
}

// emptyPool closes every pooled socket: the listener stops, or its flows
// move to a new process (pooled sockets do not).
func (ln *listener) emptyPool() {
	for up := ln.drv.pool.all.Front(); up != nil; up = ln.drv.pool.all.Front() {
		ln.unpool(up)
	}
}

// unpool closes a pooled socket.
func (ln *listener) unpool(up *rawUp) {
	if up.reuse != nil && up.reuse.pool.in {
		ln.drv.pool.remove(up)
		ln.e.pooled(-1)
	}
	up.Close()
}

// sweepPool is the sweep's part for the pool at now: idle sockets, and
// all of them after a reload.
func (ln *listener) sweepPool(now time.Time) {
	if ln.drv != nil && !ln.drv.stopped {
		ln.expirePool(ln.e.table(), now)
	}
}

// sendLoop sends b to f's client from the listener's socket, without
// waiting, and counts it: sent, or refused by the kernel (a full send
// buffer drops it, as the network may). b is a train of datagrams of seg
// bytes when seg is above 0 and below len(b): one sendmsg with
// UDP_SEGMENT, or, where the kernel refuses the train, one sendto per
// datagram: for this train (EINVAL: a segment above the client's path
// MTU), or from then on (EIO: the device cannot checksum a train).
func (ln *listener) sendLoop(f *flow, b []byte, seg int) {
	d := ln.drv
	if d.tx.n > 0 {
		ln.flushSends() // the batched replies go first: each client's stay in order
	}
	if seg > 0 && seg < len(b) {
		if !d.noGSO {
			switch e := rawsys.SendGSO(d.fd, b, seg, f.client, d.v6, &d.oob); e {
			case 0:
				ln.countDown(f, segments(len(b), seg), len(b))
				return
			case unix.EAGAIN, unix.ENOBUFS:
				for range segments(len(b), seg) {
					ln.e.dropped(metrics.UDPSendFailed)
				}
				return
			case unix.EIO:
				d.noGSO = true
			}
		}
		eachSegment(b, seg, func(s []byte) { ln.sendTo(f, s) })
		return
	}
	ln.sendTo(f, b)
}

// sendTo sends the datagram b to f's client and counts it, sent or
// refused.
func (ln *listener) sendTo(f *flow, b []byte) {
	d := ln.drv
	if e := rawsys.SendTo(d.fd, b, f.client, d.v6); e != 0 {
		ln.e.dropped(metrics.UDPSendFailed)
		return
	}
	ln.countDown(f, 1, len(b))
}

// queueLoop queues b, a reply to f's client, in the listener's send
// batch (sent by flushSends, before the loop sleeps or when the batch is
// full, and counted then); false for a train (seg above 0), which
// sendLoop sends at once.
func (ln *listener) queueLoop(f *flow, b []byte, seg int) bool {
	if seg > 0 {
		return false
	}
	d := ln.drv
	if !d.tx.add(b, f.client, d.v6, f) {
		ln.flushSends()
		d.tx.add(b, f.client, d.v6, f) // an empty batch holds any datagram
	}
	return true
}

// upRun is datagrams of one flow, in the slots of the read they came in,
// waiting to go up in one sendmmsg on its connected socket.
type upRun struct {
	f    *flow
	n    int
	hdrs [recvBatch]unix.Mmsghdr
	iovs [recvBatch]unix.Iovec
}

// queueUp queues b, a datagram of f from the listener's current read, to
// go up after those of f queued before it: a client with many queries in
// flight (dnsperf -c 1 keeps a hundred) has them sent with one call.
// False off a read of the listener (the caller sends b itself).
func (ln *listener) queueUp(f *flow, b []byte) bool {
	d := ln.drv
	if d == nil || !d.reading {
		return false
	}
	q := &d.up
	if q.n > 0 && (q.f != f || q.n == len(q.hdrs)) {
		ln.flushUp()
	}
	q.f = f
	q.iovs[q.n].Base = unsafe.SliceData(b)
	q.iovs[q.n].SetLen(len(b))
	q.hdrs[q.n].Hdr.Iov = &q.iovs[q.n]
	q.hdrs[q.n].Hdr.SetIovlen(1)
	q.n++
	return true
}

// flushUp sends the queued run up (one write for one datagram, else
// sendmmsg; a datagram the kernel refuses is lost alone, as a refused
// write's is) and counts each, sent or refused.
func (ln *listener) flushUp() {
	d := ln.drv
	if d == nil || d.up.n == 0 {
		return
	}
	q := &d.up
	f, fd := q.f, int(q.f.up.(*rawUp).fd)
	if q.n == 1 {
		_, e := rawsys.Write(fd, unsafe.Slice(q.iovs[0].Base, q.iovs[0].Len))
		ln.countedUp(f, int(q.iovs[0].Len), e == 0)
	} else {
		sendEach(q.n, func(i int) (int, syscall.Errno) { return rawsys.Sendmmsg(fd, q.hdrs[i:q.n]) }, func(i int, ok bool) {
			ln.countedUp(f, int(q.iovs[i].Len), ok)
		})
	}
	q.f, q.n = nil, 0
}

// flushSends sends the batched replies from the listener's socket (one
// sendmmsg; one more after each message the kernel refuses, which is lost
// as a refused sendto's is), counts each, sent or refused, then ends the
// flows their last reply answered. The loop calls it before it sleeps; the listener
// before it pauses, moves flows or stops.
func (ln *listener) flushSends() {
	d := ln.drv
	t := d.tx
	if t.n > 0 {
		sendEach(t.n, func(i int) (int, syscall.Errno) { return rawsys.Sendmmsg(d.fd, t.hdrs[i:t.n]) }, func(i int, ok bool) {
			if ok {
				ln.countDown(t.flows[i], 1, int(t.iovs[i].Len))
			} else {
				ln.e.dropped(metrics.UDPSendFailed)
			}
		})
		t.reset()
	}
	for i, f := range d.ending {
		ln.e.finish(f, "answered")
		d.ending[i] = nil
	}
	d.ending = d.ending[:0]
}

// countedUp counts a datagram of size bytes of f's that went up (sent),
// or that the kernel refused.
func (ln *listener) countedUp(f *flow, size int, sent bool) {
	if sent {
		ln.countUp(f, size)
	} else {
		ln.e.dropped(metrics.UDPUpstreamSendFailed)
	}
}

// sent sends the batched replies when one of them is f's, which ends
// (idle, evicted, its socket failed): its end counts and logs them.
func (ln *listener) sent(f *flow) {
	if d := ln.drv; d != nil && slices.Contains(d.tx.flows[:d.tx.n], f) {
		ln.flushSends()
	}
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
	return &rawUp{fd: int32(fd), d: ln.drv, gro: so.gro && rawsys.SetGRO(fd)}, nil
}

// rawUp is a flow's upstream socket on a loop. Between flows of a route
// that reuses sockets it waits in its listener's pool, still connected and
// watched. There is one per idle flow, so it stays at 32 bytes: what reuse
// needs is behind reuse.
type rawUp struct {
	fd      int32
	closed  bool
	watched bool
	gro     bool      // UDP_GRO is on: a read may be a train (rawRecvGRO)
	d       *driver   // of the listener whose loop watches it
	f       *flow     // the flow it serves; nil while pooled
	reuse   *reusable // a socket of a route that reuses sockets; else nil
}

// reusable is what a socket for reuse has beside: its flows' query guard
// and its place in the pool.
type reusable struct {
	guard queryGuard
	pool  pooled
}

// Read and Write refuse a closed socket: its number may be another
// socket's by now, and a datagram must never reach another flow's backend.
func (u *rawUp) Read(b []byte) (int, error) {
	if u.closed {
		return 0, net.ErrClosed
	}
	n, e := rawsys.Read(int(u.fd), b)
	if e != 0 {
		return 0, e
	}
	return n, nil
}

func (u *rawUp) Write(b []byte) (int, error) {
	if u.closed {
		return 0, net.ErrClosed
	}
	n, e := rawsys.Write(int(u.fd), b)
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
	u.d.lp.Forget(int(u.fd))
	rawsys.Close(int(u.fd))
	return nil
}

func (u *rawUp) SyscallConn() (syscall.RawConn, error) { return nil, errNoRawConn }
