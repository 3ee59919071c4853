package evloop

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/darkit/protoplex/internal/ilist"
	"github.com/darkit/protoplex/internal/rawsys"
	"golang.org/x/sys/unix"
)

// Supported reports whether this system has the event-loop data plane.
const Supported = true

// Plane is a set of event loops sharing the listeners given to Serve: each
// listener is watched by every loop (EPOLLEXCLUSIVE wakes one), so a burst
// of connections spreads over the cores without SO_REUSEPORT, and a socket
// handed over by systemd or a Unix socket works the same.
type Plane struct {
	env   Env
	loops []*Loop
	wg    sync.WaitGroup
	// adopted counts Adopt's messages: each starts its round-robin over
	// the loops where the last one left off, roughly.
	adopted atomic.Int64
}

// New starts n loops (n ≤ 0: one per CPU) for env.
func New(env Env, n int) (*Plane, error) {
	if n <= 0 {
		n = runtime.NumCPU()
	}
	env.defaults()
	p := &Plane{env: env}
	for i := 0; i < n; i++ {
		l, err := newLoop(p, i, n)
		if err != nil {
			p.Close()
			return nil, err
		}
		p.loops = append(p.loops, l)
		p.wg.Add(1)
		go l.run()
	}
	return p, nil
}

// Close stops the loops once their connections are gone (a drain has
// closed them already) and waits for them. It may be called again.
func (p *Plane) Close() {
	for _, l := range p.loops {
		l.post(func() { l.stopping = true })
	}
	p.wg.Wait()
}

// Serve accepts ln's connections on the loops until ctx ends or ln is
// closed (seen within listenerCheck), then stops watching ln. Only TCP and Unix
// stream listeners can be served; others return ErrUnsupported at once, and
// a closed plane ErrClosed.
func (p *Plane) Serve(ctx context.Context, ln net.Listener) error {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return ErrUnsupported
	}
	switch ln.(type) {
	case *net.TCPListener, *net.UnixListener:
	default:
		return ErrUnsupported
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	// A duplicate of the socket is watched, so the caller's Close of ln
	// cannot leave a loop accepting on a number the process reuses.
	fd := -1
	var dupErr error
	if err := rc.Control(func(s uintptr) { fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return err
	}
	if dupErr != nil {
		return fmt.Errorf("evloop: dup listener: %w", dupErr)
	}
	for _, l := range p.loops {
		lst := &listener{fd: fd, unix: isUnix(ln)} // each loop its own back-off
		if err := l.call(func() { l.addListener(lst) }); err != nil {
			p.unwatch(fd)
			return err
		}
	}
	// The caller may also stop ln by closing it (as with Accept): the
	// duplicate would keep the port open, so ln is looked at now and then.
	tick := time.NewTicker(listenerCheck)
	for open := true; open; {
		select {
		case <-ctx.Done():
			open = false
		case <-tick.C:
			open = rc.Control(func(uintptr) {}) == nil
		}
	}
	tick.Stop()
	p.unwatch(fd)
	return nil
}

// unwatch takes the listener fd off every loop still running, and closes it.
func (p *Plane) unwatch(fd int) {
	for _, l := range p.loops {
		_ = l.call(func() { l.removeListener(fd) }) // a stopped loop watches nothing
	}
	rawsys.Close(fd)
}

func isUnix(ln net.Listener) bool { _, ok := ln.(*net.UnixListener); return ok }

// ErrUnsupported: the listener is not a TCP or Unix stream socket.
var ErrUnsupported = errors.New("evloop: listener type not supported")

// ErrClosed: the plane's loops have stopped.
var ErrClosed = errors.New("evloop: plane closed")

// listener is one watched listening socket.
type listener struct {
	fd      int
	unix    bool
	backoff time.Duration
}

// Loop is one event loop: an epoll instance served by one goroutine,
// owning every connection it accepted.
type Loop struct {
	p     *Plane
	ep    int
	epf   *os.File        // ep in the runtime's poller, to sleep on
	rc    syscall.RawConn // epf's
	armed time.Time       // the deadline set on epf
	wake  int             // eventfd: a post from another goroutine; closed once closed is set

	mu     sync.Mutex
	closed bool // the loop has stopped: post refuses, nothing writes to wake
	inbox  []func()
	spare  []func()

	refs      []ref // by fd
	listeners []*listener
	timers    timerHeap
	tasks     []task           // rare timed work (accept back-off): a few at most, one per listener
	ready     []*conn          // conns whose pump stopped at the fairness cap
	pipes     []spipe          // empty splice pipes, for reuse
	conns     ilist.List[conn] // conns owned, oldest first
	live      int              // len(conns)
	nextID    uint64           // the next conn's ID
	idStep    uint64           // the number of loops: loop i numbers i+1, i+1+n, …, so no ID repeats in a plane
	stopping  bool
	// beforeWait runs after each round, before the loop waits: a UDP
	// listener sends the replies it gathered in the round (udp.Loop).
	beforeWait []*func()

	now time.Time
	buf []byte // the loop's copy buffer
	sa  unix.RawSockaddrAny
}

// ref is what an fd registered in the loop's epoll belongs to.
type ref struct {
	c  *conn
	ln *listener
	fn func() // a socket watched for another owner (Watch: UDP)
}

const (
	listenerCheck = 100 * time.Millisecond
	loopBuf       = 64 << 10
	maxEvents     = 256
	acceptBatch   = 64
	maxFreePipes  = 32
	maxPumpChunks = 16 // reads per direction per wake: a bulk stream must not starve the loop's others
)

// newLoop makes loop i of n.
func newLoop(p *Plane, i, n int) (*Loop, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("evloop: epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(ep)
		return nil, fmt.Errorf("evloop: eventfd: %w", err)
	}
	if e := rawsys.EpollCtl(ep, unix.EPOLL_CTL_ADD, wake, unix.EPOLLIN); e != 0 {
		unix.Close(ep)
		unix.Close(wake)
		return nil, fmt.Errorf("evloop: epoll_ctl: %w", e)
	}
	// Non-blocking, the epoll descriptor joins the runtime's poller (wait).
	if err := unix.SetNonblock(ep, true); err != nil {
		unix.Close(ep)
		unix.Close(wake)
		return nil, fmt.Errorf("evloop: epoll: %w", err)
	}
	epf := os.NewFile(uintptr(ep), "epoll")
	rc, err := epf.SyscallConn()
	if err != nil {
		epf.Close()
		unix.Close(wake)
		return nil, fmt.Errorf("evloop: epoll: %w", err)
	}
	l := &Loop{p: p, ep: ep, epf: epf, rc: rc, wake: wake, buf: make([]byte, loopBuf), now: p.env.Now(),
		nextID: uint64(i) + 1, idStep: uint64(n), conns: ilist.New(func(c *conn) *ilist.Links[conn] { return &c.links })}
	return l, nil
}

// post runs fn on the loop's goroutine, soon; false when the loop has
// stopped, and fn will never run. The wake-up is written under l.mu, so it
// cannot reach a descriptor that took wake's number after shutdown.
func (l *Loop) post(fn func()) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	if len(l.inbox) == 0 {
		one := uint64(1)
		_, _ = unix.Write(l.wake, (*[8]byte)(unsafeUint64(&one))[:])
	}
	l.inbox = append(l.inbox, fn)
	return true
}

// call runs fn on the loop and waits for it; ErrClosed when the loop has
// stopped (fn did not run).
func (l *Loop) call(fn func()) error {
	done := make(chan struct{})
	if !l.post(func() { fn(); close(done) }) {
		return ErrClosed
	}
	<-done
	return nil
}

func (l *Loop) run() {
	defer l.p.wg.Done()
	evs := make([]unix.EpollEvent, maxEvents)
	for {
		n := l.wait(evs)
		l.now = l.p.env.Now()
		for i := 0; i < n; i++ {
			ev := &evs[i]
			fd := int(ev.Fd)
			if fd == l.wake {
				l.drainInbox()
				continue
			}
			if fd >= len(l.refs) {
				continue
			}
			r := l.refs[fd]
			switch {
			case r.ln != nil:
				l.accept(r.ln)
			case r.c != nil:
				r.c.event(fd, ev.Events)
			case r.fn != nil:
				r.fn()
			}
		}
		l.runReady()
		l.fireTimers()
		for i := 0; i < len(l.beforeWait); i++ {
			(*l.beforeWait[i])()
		}
		if l.stopping && l.live == 0 {
			l.shutdown()
			return
		}
	}
}

// wait returns the next events: at once when there are some, else after
// sleeping until there are or the next timer. The loop sleeps the way any
// goroutine waiting on a socket does: its epoll instance is itself a
// descriptor in the runtime's poller, readable while events are ready. So
// no thread sits in epoll_wait holding a P the scheduler must take back,
// and the GC never waits for the loop.
func (l *Loop) wait(evs []unix.EpollEvent) int {
	if len(l.ready) > 0 {
		return rawsys.EpollPoll(l.ep, evs)
	}
	var deadline time.Time
	if next, ok := l.nextDeadline(); ok {
		deadline = time.Unix(0, next)
		if !l.p.env.realClock { // the timers keep the injected clock's time: sleep as long
			deadline = time.Now().Add(time.Duration(next - l.p.env.Now().UnixNano()))
		}
	}
	if !deadline.Equal(l.armed) {
		_ = l.epf.SetReadDeadline(deadline)
		l.armed = deadline
	}
	n := 0
	_ = l.rc.Read(func(uintptr) bool { // an error is the deadline: the timers are due
		n = rawsys.EpollPoll(l.ep, evs)
		return n > 0
	})
	return n
}

func (l *Loop) drainInbox() {
	var b [8]byte
	_, _ = unix.Read(l.wake, b[:])
	l.mu.Lock()
	work := l.inbox
	l.inbox = l.spare[:0]
	l.mu.Unlock()
	for i, fn := range work {
		fn()
		work[i] = nil
	}
	l.mu.Lock()
	l.spare = work[:0]
	l.mu.Unlock()
}

func (l *Loop) setRef(fd int, r ref) {
	if fd >= len(l.refs) {
		n := max(2*len(l.refs), fd+1, 1024)
		refs := make([]ref, n)
		copy(refs, l.refs)
		l.refs = refs
	}
	l.refs[fd] = r
}

func (l *Loop) clearRef(fd int) {
	if fd >= 0 && fd < len(l.refs) {
		l.refs[fd] = ref{}
	}
}

func (l *Loop) addListener(ln *listener) {
	l.listeners = append(l.listeners, ln)
	l.setRef(ln.fd, ref{ln: ln})
	_ = rawsys.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, ln.fd, unix.EPOLLIN|unix.EPOLLEXCLUSIVE)
}

func (l *Loop) removeListener(fd int) {
	for i, x := range l.listeners {
		if x.fd == fd {
			l.listeners = append(l.listeners[:i], l.listeners[i+1:]...)
			break
		}
	}
	_ = rawsys.EpollCtl(l.ep, unix.EPOLL_CTL_DEL, fd, 0)
	l.clearRef(fd)
}

// accept takes the listener's waiting connections, a batch at a time.
func (l *Loop) accept(ln *listener) {
	for i := 0; i < acceptBatch; i++ {
		fd, peer, e := rawsys.Accept(ln.fd, &l.sa)
		switch e {
		case 0:
			ln.backoff = 0
			l.startConn(fd, peer, ln)
			continue
		case unix.EAGAIN, unix.ECONNABORTED, unix.EINTR:
			if e == unix.EAGAIN {
				return
			}
			continue
		}
		// Out of fds or kernel memory: stop watching the listener for a
		// while instead of spinning on it.
		ln.backoff = min(max(2*ln.backoff, 5*time.Millisecond), time.Second)
		l.p.env.Log.Warn("accept failed", "err", e, "retry_in", ln.backoff)
		_ = rawsys.EpollCtl(l.ep, unix.EPOLL_CTL_DEL, ln.fd, 0)
		l.after(ln.backoff, func() {
			for _, x := range l.listeners {
				if x == ln {
					_ = rawsys.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, ln.fd, unix.EPOLLIN|unix.EPOLLEXCLUSIVE)
				}
			}
		})
		return
	}
}

// task is timed work on the loop.
type task struct {
	at int64 // unix nanos of the loop's clock
	fn func()
}

// after runs fn on the loop once its clock has passed d from now (rare
// work: accept back-off). It waits beside the loop's timers, so it dies
// with the loop and never posts from another goroutine.
func (l *Loop) after(d time.Duration, fn func()) {
	l.tasks = append(l.tasks, task{at: l.now.Add(d).UnixNano(), fn: fn})
}

// runTasks runs the tasks due at now. It is called after every wake while
// a task waits (a UDP listener's sweep always does), so the list is only
// rebuilt when one is due.
func (l *Loop) runTasks(now int64) {
	if !slices.ContainsFunc(l.tasks, func(t task) bool { return t.at <= now }) {
		return
	}
	due := l.tasks
	l.tasks = nil
	for _, t := range due {
		if t.at <= now {
			t.fn()
		} else {
			l.tasks = append(l.tasks, t)
		}
	}
}

// nextDeadline is the earliest timer or task; false when there is none.
func (l *Loop) nextDeadline() (int64, bool) {
	next, ok := int64(0), false
	if len(l.timers) > 0 {
		next, ok = l.timers[0].deadline, true
	}
	for _, t := range l.tasks {
		if !ok || t.at < next {
			next, ok = t.at, true
		}
	}
	return next, ok
}

// runReady pumps the pairs queued by the fairness cap, in one pass:
// whatever re-queues itself runs after the next look at the kernel, so a
// busy pair cannot hold the loop.
func (l *Loop) runReady() {
	batch := l.ready
	l.ready = nil
	for _, c := range batch {
		c.queued = false
		if c.st == stForward { // not ended since it was queued
			c.pumpBoth()
		}
	}
}

// shutdown ends the loop: from now on a post is refused. Work posted
// since the last look at the inbox still runs, so no call waits forever.
func (l *Loop) shutdown() {
	l.mu.Lock()
	l.closed = true
	work := l.inbox
	l.inbox, l.spare = nil, nil
	l.mu.Unlock()
	for _, fn := range work {
		fn()
	}
	l.dropPipes()
	unix.Close(l.wake)
	l.epf.Close() // the epoll instance
}

// since is the time the loop's clock says has passed since t.
func (l *Loop) since(t time.Time) time.Duration { return l.p.env.Now().Sub(t) }

// own makes c one of the loop's connections.
func (l *Loop) own(c *conn) {
	c.id = l.nextID
	l.nextID += l.idStep
	l.conns.PushBack(c)
	l.live++
}

// disown: c has ended or left the loop (an in-process handler).
func (l *Loop) disown(c *conn) {
	l.conns.Remove(c)
	if l.live--; l.live == 0 {
		l.dropPipes()
	}
}

// getPipe returns an empty pipe, from the loop's spares or new; ok false
// when none can be made (fd limit).
func (l *Loop) getPipe() (spipe, bool) {
	if n := len(l.pipes); n > 0 {
		p := l.pipes[n-1]
		l.pipes = l.pipes[:n-1]
		return p, true
	}
	return makePipe()
}

func (l *Loop) putPipe(p spipe) {
	if len(l.pipes) < maxFreePipes {
		l.pipes = append(l.pipes, p)
		return
	}
	p.close()
}

// dropPipes closes the spare pipes: a loop without connections holds none.
func (l *Loop) dropPipes() {
	for _, p := range l.pipes {
		p.close()
	}
	l.pipes = l.pipes[:0]
}
