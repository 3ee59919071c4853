package evloop

import (
	"container/heap"
	"unsafe"

	"github.com/darkit/protoplex/internal/proxy"
	"github.com/darkit/protoplex/internal/rawsys"
	"golang.org/x/sys/unix"
)

// dir is one direction of a forwarded connection: src → dst (up: client →
// backend, down: backend → client).
type dir struct {
	readable bool // src: readable since its last EAGAIN (edge-triggered)
	writable bool // dst: writable since its last EAGAIN
	rdhup    bool // src's FIN is queued behind its data
	eof      bool // src reached EOF
	shut     bool // dst was shut down for writing: this direction is done

	pend    []byte  // read from src, not yet written to dst
	pendBuf *[]byte // pool buffer behind pend

	pipe    spipe // for splicing, when hasPipe
	hasPipe bool
	inPipe  int // bytes in pipe, not yet spliced to dst

	n int64 // bytes moved (written to dst)
}

// blocked reports whether the direction holds bytes its dst has not taken.
func (d *dir) blocked() bool { return len(d.pend) > 0 || d.inPipe > 0 }

func (d *dir) free(l *Loop) {
	if d.pendBuf != nil {
		l.p.env.Bufs.Put(d.pendBuf)
		d.pendBuf, d.pend = nil, nil
	}
	if d.hasPipe {
		if d.inPipe == 0 {
			l.putPipe(d.pipe)
		} else {
			d.pipe.close()
		}
		d.hasPipe, d.inPipe = false, 0
	}
}

// pumpBoth moves what can move both ways, and ends the connection when both
// directions are done.
func (c *conn) pumpBoth() {
	if !c.pump(&c.up, c.fd, c.bfd) || !c.pump(&c.down, c.bfd, c.fd) {
		return
	}
	if c.up.shut && c.down.shut {
		c.reason = proxy.Done
		c.finish()
	}
}

// pump moves src → dst until src has nothing, dst takes nothing more or the
// fairness cap; false when the connection ended (an error).
func (c *conn) pump(d *dir, src, dst int) bool {
	l := c.l
	if d.blocked() {
		if !d.writable {
			return true
		}
		if !c.flush(d, dst) {
			return false
		}
		if d.blocked() {
			return true
		}
	}
	if d.eof {
		if !d.shut {
			_ = rawsys.ShutdownWrite(dst)
			d.shut = true
		}
		return true
	}
	spliceAfter := l.p.env.SpliceAfter
	for i := 0; d.readable; i++ {
		if i == maxPumpChunks {
			c.queue()
			return true
		}
		var m int
		var e unix.Errno
		if spliceAfter >= 0 && d.n >= spliceAfter && c.tcp && c.entry.Backend != nil && (d.hasPipe || c.takePipe(d)) {
			m, e = rawsys.Splice(src, d.pipe.w, pipeSize)
			if m > 0 {
				d.inPipe += m
				c.last = l.now.UnixNano()
				if !c.flush(d, dst) {
					return false
				}
				if d.blocked() {
					return true
				}
				continue // a non-blocking splice takes one pass over the queue: short is no sign of drained
			}
			if m == 0 || e == unix.EAGAIN {
				l.putPipe(d.pipe) // empty: an idle connection holds no pipe
				d.hasPipe = false
			}
		} else {
			m, e = rawsys.Read(src, l.buf)
			if m > 0 {
				d.drained(m < len(l.buf))
				c.last = l.now.UnixNano()
				// When src's FIN is queued, this data is likely its last:
				// held (MSG_MORE) until our FIN follows, both leave in one
				// segment.
				more := d.rdhup && m < len(l.buf)
				w, we := rawsys.Send(dst, l.buf[:m], more)
				if w < 0 {
					if we != unix.EAGAIN && we != unix.EINTR {
						c.reason = proxy.Error
						c.finish()
						return false
					}
					w = 0
				}
				d.n += int64(w)
				if w < m {
					d.hold(l, l.buf[w:m])
					return true
				}
				if !more {
					continue
				}
				m = 0 // src's FIN follows these bytes: its EOF is certain without another read
			}
		}
		switch {
		case m == 0:
			d.eof, d.readable, d.shut = true, false, true
			if other := c.other(d); !other.shut {
				_ = rawsys.ShutdownWrite(dst)
			} // else both are done: the close that follows sends the FIN
		default:
			if !c.retry(e, &d.readable) {
				return false
			}
		}
	}
	return true
}

// drained records a read(2) that took less than asked: a stream socket's
// read stops short only when its queue is empty, and edge-triggered epoll
// reports what comes next, so no read is spent on EAGAIN — unless the
// peer's FIN is queued, which a read must still take. (A non-blocking
// splice stops after one pass, so it says nothing of the kind.)
func (d *dir) drained(short bool) {
	if short && !d.rdhup {
		d.readable = false
	}
}

func (c *conn) other(d *dir) *dir {
	if d == &c.up {
		return &c.down
	}
	return &c.up
}

// hold keeps bytes dst did not take, until it is writable again.
func (d *dir) hold(l *Loop, b []byte) {
	d.pendBuf = l.p.env.Bufs.Get(len(b))
	d.pend = append((*d.pendBuf)[:0], b...)
	d.writable = false
}

// flush writes what the direction holds; false when the connection ended.
func (c *conn) flush(d *dir, dst int) bool {
	l := c.l
	for d.writable && d.blocked() {
		var w int
		var e unix.Errno
		if d.inPipe > 0 {
			w, e = rawsys.Splice(d.pipe.r, dst, d.inPipe)
		} else {
			w, e = rawsys.Send(dst, d.pend, false)
		}
		switch {
		case w > 0:
			d.n += int64(w)
			c.last = l.now.UnixNano()
			if d.inPipe > 0 {
				d.inPipe -= w
			} else if d.pend = d.pend[w:]; len(d.pend) == 0 {
				l.p.env.Bufs.Put(d.pendBuf)
				d.pendBuf, d.pend = nil, nil
			}
		default:
			if !c.retry(e, &d.writable) {
				return false
			}
		}
	}
	return true
}

// retry takes a failed read or write: EAGAIN clears the readiness it spent
// (edge-triggered: the next event sets it again), EINTR is asked again, any
// other error ends the connection (false).
func (c *conn) retry(e unix.Errno, ready *bool) bool {
	switch e {
	case unix.EAGAIN:
		*ready = false
	case unix.EINTR:
	default:
		c.reason = proxy.Error
		c.finish()
		return false
	}
	return true
}

// takePipe gives the direction a pipe; false (counted) when none can be
// had: the copy goes on through the loop's buffer.
func (c *conn) takePipe(d *dir) bool {
	p, ok := c.l.getPipe()
	if !ok {
		c.fallback++
		return false
	}
	d.pipe, d.hasPipe = p, true
	return true
}

// queue runs the connection's pump again after the loop's next look at the
// kernel (the fairness cap stopped it with bytes left).
func (c *conn) queue() {
	if !c.queued {
		c.queued = true
		c.l.ready = append(c.l.ready, c)
	}
}

// spipe is one kernel pipe bytes are spliced through.
type spipe struct{ r, w int }

const pipeSize = 1 << 20

func makePipe() (spipe, bool) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return spipe{}, false
	}
	// A larger pipe moves more per splice on bulk streams; the kernel only
	// commits the pages filled. Failure keeps the 64 KiB default.
	_, _ = unix.FcntlInt(uintptr(fds[1]), unix.F_SETPIPE_SZ, pipeSize)
	return spipe{r: fds[0], w: fds[1]}, true
}

func (p spipe) close() {
	rawsys.Close(p.r)
	rawsys.Close(p.w)
}

// Timers: one deadline per connection, in a heap per loop, read against
// the loop's clock (Env.Now). An idle timeout is not moved on every byte:
// when it fires early, it is set again from the last activity. The loop's
// rare timed work (accept back-off) waits in Loop.tasks beside the heap.

type timerHeap []*conn

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].deadline < h[j].deadline }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hidx, h[j].hidx = i, j
}
func (h *timerHeap) Push(x any) {
	c := x.(*conn)
	c.hidx = len(*h)
	*h = append(*h, c)
}
func (h *timerHeap) Pop() any {
	old := *h
	n := len(old)
	c := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	c.hidx = -1
	return c
}

func (c *conn) setDeadline(ns int64) {
	c.deadline = ns
	if c.hidx >= 0 {
		heap.Fix(&c.l.timers, c.hidx)
		return
	}
	heap.Push(&c.l.timers, c)
}

func (c *conn) clearDeadline() {
	if c.hidx >= 0 {
		heap.Remove(&c.l.timers, c.hidx)
	}
}

func (l *Loop) fireTimers() {
	now := l.now.UnixNano()
	for len(l.timers) > 0 && l.timers[0].deadline <= now {
		c := heap.Pop(&l.timers).(*conn)
		c.timeout()
	}
	if len(l.tasks) > 0 {
		l.runTasks(now)
	}
}

func unsafeUint64(p *uint64) unsafe.Pointer { return unsafe.Pointer(p) }
