// Package proxy moves bytes between a client and its backend once the
// connection is identified: replay what identification consumed, then copy
// both ways (splice on Linux), propagate half-close, enforce an idle timeout.
package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// CloseReason says how a forwarded connection ended (metric label).
type CloseReason uint8

const (
	Done        CloseReason = iota // both sides finished normally
	IdleTimeout                    // no byte either way for the idle timeout
	Error                          // a read or write failed, or a peer reset while the other side was blocked
	Aborted                        // closed from outside (drain deadline, shutdown)
)

func (r CloseReason) String() string {
	switch r {
	case Done:
		return "done"
	case IdleTimeout:
		return "idle_timeout"
	case Error:
		return "error"
	case Aborted:
		return "drain"
	}
	return "unknown"
}

// Stats of one forwarded connection.
type Stats struct {
	Up, Down int64 // client→backend, backend→client (replayed bytes included in Up)
	Reason   CloseReason
	// PipeFallbacks counts the reads copied through a user-space buffer
	// because no splice pipe could be had (fd limit, kernel memory).
	PipeFallbacks int64
}

// blockedWriteCheck is how long a write may stay blocked before the copy
// looks at its source socket: a direction blocked writing does not read its
// source, so without the look a reset there (client RST, keepalive timeout)
// would go unseen until the destination drains. The look is one getsockopt
// per interval, and only while blocked.
const blockedWriteCheck = time.Second

// Forward copies client⇄backend until both directions end, then closes both
// conns. replay (the bytes consumed by identification) is written to the
// backend first. idle 0 disables the idle timeout. aborted, if non-nil, is
// consulted to tell a close from outside apart from an error.
//
// A peer that fails while the other side is blocked writing to its partner
// (say a client resets while its upload waits for a backend that stopped
// reading) ends the pair within blockedWriteCheck, with reason Error. A
// half-close (FIN) there is no failure: the pair stays until the rest is
// delivered.
func Forward(client, backend net.Conn, replay []byte, idle time.Duration, aborted func() bool) Stats {
	return forward(client, backend, replay, aborted, newPair(idle))
}

func newPair(idle time.Duration) *pair {
	return &pair{idle: idle, pipes: sharedPipes, spliceIn: spliceToPipe, blockedCheck: blockedWriteCheck}
}

func forward(client, backend net.Conn, replay []byte, aborted func() bool, p *pair) Stats {
	var st Stats
	if len(replay) > 0 {
		if _, err := backend.Write(replay); err != nil {
			client.Close()
			backend.Close()
			st.Reason = Error
			return st
		}
		st.Up = int64(len(replay))
	}
	p.touch()
	var wg sync.WaitGroup
	var upN int64
	var upErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		upN, upErr = p.copy(backend, client)
	}()
	downN, downErr := p.copy(client, backend)
	wg.Wait()
	client.Close()
	backend.Close()
	st.Up += upN
	st.Down = downN
	st.PipeFallbacks = p.pipeFallbacks.Load()
	switch {
	case p.idleFired.Load():
		st.Reason = IdleTimeout
	case upErr != nil || downErr != nil:
		st.Reason = Error
		if aborted != nil && aborted() {
			st.Reason = Aborted
		}
	default:
		st.Reason = Done
	}
	return st
}

// pair is the state both directions of one connection share.
type pair struct {
	idle      time.Duration
	last      atomic.Int64 // unix nanos of the last byte moved either way
	idleFired atomic.Bool
	ended     atomic.Int32 // directions that reached EOF

	pipes         pipeSource
	spliceIn      func(sock, pipeW int) (int, error) // socket → pipe, one chunk
	blockedCheck  time.Duration
	pipeFallbacks atomic.Int64
	sourceChecks  atomic.Int64 // looks at a source while its write was blocked
}

func (p *pair) touch() {
	if p.idle > 0 {
		p.last.Store(time.Now().UnixNano())
	}
}

// copy moves src→dst until EOF (then half-closes dst) or an error (then
// closes both so the other direction ends too).
func (p *pair) copy(dst, src net.Conn) (int64, error) {
	if p.idle > 0 {
		_ = src.SetReadDeadline(time.Now().Add(p.idle))
	}
	var n int64
	var err error
	for {
		var m int64
		if s, ok := src.(*net.TCPConn); ok {
			if d, ok := dst.(*net.TCPConn); ok {
				m, err = spliceCopy(d, s, p)
			} else {
				m, err = bufferedCopy(dst, src, p)
			}
		} else {
			m, err = bufferedCopy(dst, src, p)
		}
		n += m
		if err == nil {
			break // EOF
		}
		if errors.Is(err, os.ErrDeadlineExceeded) && p.idle > 0 {
			last := time.Unix(0, p.last.Load())
			if since := time.Since(last); since < p.idle {
				_ = src.SetReadDeadline(last.Add(p.idle))
				continue
			}
			p.idleFired.Store(true)
		}
		// Unblock the other direction.
		_ = src.Close()
		_ = dst.Close()
		return n, err
	}
	if p.ended.Add(1) == 2 {
		// The other direction ended first: Forward closes both conns right
		// away, and close sends the FIN, so a shutdown would be a wasted
		// syscall.
		return n, nil
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		if cwErr := cw.CloseWrite(); cwErr != nil {
			_ = dst.Close()
		}
	} else {
		_ = dst.Close()
	}
	return n, nil
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// bufferedCopy is the portable path (TLS conns, pipes, non-Linux).
func bufferedCopy(dst io.Writer, src io.Reader, p *pair) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var n int64
	for {
		m, rerr := src.Read(buf)
		if m > 0 {
			p.touch()
			w, werr := dst.Write(buf[:m])
			n += int64(w)
			p.touch() // a slow reader that still reads is not idle
			if werr != nil {
				return n, werr
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}
