package evloop

import (
	"fmt"
	"slices"
	"time"

	"github.com/darkit/protoplex/internal/rawsys"
	"github.com/darkit/protoplex/internal/udp"
	"golang.org/x/sys/unix"
)

// UDPLoops returns the plane's loops as the UDP engine drives them: each
// of an address's sockets, with its flow table and its flows' upstream
// sockets, is owned by one loop (udp.Options.Loops).
func (p *Plane) UDPLoops() []udp.Loop {
	out := make([]udp.Loop, len(p.loops))
	for i, l := range p.loops {
		out[i] = udpLoop{l}
	}
	return out
}

// udpLoop is a Loop as the UDP engine sees it.
type udpLoop struct{ l *Loop }

func (u udpLoop) Post(fn func()) bool { return u.l.post(fn) }

// Watch registers fd, level-triggered: fn reads what it can, and what is
// left wakes the loop again.
func (u udpLoop) Watch(fd int, fn func()) error {
	l := u.l
	if fd >= 0 && fd < len(l.refs) && (l.refs[fd].c != nil || l.refs[fd].ln != nil || l.refs[fd].fn != nil) {
		return fmt.Errorf("evloop: fd %d is watched already", fd)
	}
	l.setRef(fd, ref{fn: fn})
	if e := rawsys.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, fd, unix.EPOLLIN); e != 0 {
		l.clearRef(fd)
		return fmt.Errorf("evloop: epoll_ctl: %w", e)
	}
	return nil
}

// Unwatch takes fd out of the loop's epoll set; on a stopped loop (its
// epoll closed) there is nothing to take it off.
func (u udpLoop) Unwatch(fd int) {
	l := u.l
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if !closed {
		_ = rawsys.EpollCtl(l.ep, unix.EPOLL_CTL_DEL, fd, 0)
	}
	l.clearRef(fd)
}

// Forget forgets fd, the only descriptor of its socket, which the caller
// closes at once: the close takes it out of the epoll set, so no
// epoll_ctl is spent (one system call less per UDP flow). An event for it
// read in this round finds no ref, or a new socket that took the number
// and reads nothing (it is non-blocking).
func (u udpLoop) Forget(fd int) { u.l.clearRef(fd) }

func (u udpLoop) After(d time.Duration, fn func()) { u.l.after(d, fn) }

// BeforeWait adds fn to the work the loop does before each wait.
func (u udpLoop) BeforeWait(fn func()) func() {
	l := u.l
	h := &fn
	l.beforeWait = append(l.beforeWait, h)
	return func() { l.beforeWait = slices.DeleteFunc(l.beforeWait, func(x *func()) bool { return x == h }) }
}
