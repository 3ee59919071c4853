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

// Options of Forward.
type Options struct {
	// Replay is written to the backend before anything is copied: the
	// bytes identification consumed from the client. ReplayTimeout bounds
	// that write (0: unbounded), so a backend that accepts but never reads
	// cannot hold the pair, nor the replay's buffer, forever.
	Replay        []byte
	ReplayTimeout time.Duration
	// ReplayDone, if set, is called once Forward is done with Replay: after
	// the write, before any byte is copied, also when the write failed or
	// Replay is empty; on the goroutine that called Forward. Forward does
	// not retain Replay after that, so the caller can give its buffer back
	// while the connection lives on, without a copy of the replay.
	ReplayDone func()
	// Idle ends the pair when no byte moved either way for that long; 0
	// disables it.
	Idle time.Duration
	// Aborted, if set, is consulted when a copy fails, to tell a close from
	// outside (drain deadline, shutdown) apart from an error.
	Aborted func() bool
}

// Forward writes opt.Replay to backend, then copies client⇄backend until
// both directions end, then closes both conns. A failed replay write ends
// the pair at once with reason Error; the bytes it wrote count in Up.
//
// A peer that fails while the other side is blocked writing to its partner
// (say a client resets while its upload waits for a backend that stopped
// reading) ends the pair within blockedWriteCheck, with reason Error. A
// half-close (FIN) there is no failure: the pair stays until the rest is
// delivered.
func Forward(client, backend net.Conn, opt Options) Stats {
	return forward(client, backend, opt, newPair(opt.Idle))
}

func newPair(idle time.Duration) *pair {
	return &pair{idle: idle, pipes: sharedPipes, spliceIn: spliceToPipe, blockedCheck: blockedWriteCheck}
}

// replay writes opt.Replay to backend within opt.ReplayTimeout, then
// reports it done. It returns the bytes written.
func replay(backend net.Conn, opt Options) (int64, error) {
	if opt.ReplayDone != nil {
		defer opt.ReplayDone()
	}
	if len(opt.Replay) == 0 {
		return 0, nil
	}
	if opt.ReplayTimeout > 0 {
		_ = backend.SetWriteDeadline(time.Now().Add(opt.ReplayTimeout))
		defer backend.SetWriteDeadline(time.Time{})
	}
	n, err := backend.Write(opt.Replay)
	return int64(n), err
}

func forward(client, backend net.Conn, opt Options, p *pair) Stats {
	var st Stats
	var err error
	if st.Up, err = replay(backend, opt); err != nil {
		client.Close()
		backend.Close()
		st.Reason = Error
		return st
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
		if opt.Aborted != nil && opt.Aborted() {
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
