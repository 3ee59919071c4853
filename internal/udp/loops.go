package udp

import (
	"errors"
	"time"
)

// Loop is an event loop a listener can run on (Options.Loops): the
// listener's socket, its flow table and its flows' upstream sockets are
// then owned by the loop's goroutine, with no goroutine per listener or
// per flow. Watch, Unwatch and After are called on the loop only; Post
// from anywhere.
type Loop interface {
	// Post runs fn on the loop, soon; false when the loop has stopped
	// (fn will never run).
	Post(fn func()) bool
	// Watch calls fn on the loop whenever fd is readable (level
	// triggered: fn reads until it would block, or is called again).
	Watch(fd int, fn func()) error
	// Unwatch stops watching fd; the caller closes it afterwards.
	Unwatch(fd int)
	// Forget stops watching fd, the only descriptor of its socket, which
	// the caller closes at once: the close takes it out of the loop's
	// epoll, without a system call of its own.
	Forget(fd int)
	// After runs fn on the loop once d has passed on its clock.
	After(d time.Duration, fn func())
	// BeforeWait runs fn on the loop after each round of its work, before
	// it waits for more (a listener's batched replies leave then), until
	// remove is called.
	BeforeWait(fn func()) (remove func())
}

// Loops returns the loops the listeners of one address run on, and the
// function that gives them back when the listeners stop; nil loops: a
// goroutine per listener and per flow (the portable path).
type Loops func() ([]Loop, func())

// errNoRawConn: a flow's socket on a loop is a bare descriptor.
var errNoRawConn = errors.New("udp: no RawConn for a socket on an event loop")
