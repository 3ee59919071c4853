package proxy

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// Why not io.Copy: net.TCPConn.ReadFrom splices too, but holds a pipe (two
// fds and 64 KiB of kernel buffer) for as long as it waits for data, i.e.
// for the whole life of an idle connection, and it hides progress, so an idle
// timeout cannot see activity. Here a pipe is taken from the pool only once
// the source is readable and returned as soon as it is drained.

const (
	spliceChunk  = 1 << 20
	pipeSize     = 1 << 20
	fSetPipeSize = 1031      // F_SETPIPE_SZ
	spliceFlags  = 0x1 | 0x2 // SPLICE_F_MOVE | SPLICE_F_NONBLOCK
)

// spipe is one kernel pipe that bytes go through from socket to socket.
type spipe struct {
	r, w    int
	cleanup runtime.Cleanup
}

func makePipe() (*spipe, error) {
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		return nil, err
	}
	// A larger pipe moves more per splice call on bulk streams; the kernel
	// only commits pages actually filled. Failure keeps the 64 KiB default.
	_, _, _ = syscall.Syscall(syscall.SYS_FCNTL, uintptr(fds[1]), fSetPipeSize, pipeSize)
	p := &spipe{r: fds[0], w: fds[1]}
	// sync.Pool drops idle pipes at GC without telling: the cleanup closes them.
	p.cleanup = runtime.AddCleanup(p, func(fds [2]int) { syscall.Close(fds[0]); syscall.Close(fds[1]) }, fds)
	return p, nil
}

func (p *spipe) close() {
	p.cleanup.Stop()
	syscall.Close(p.r)
	syscall.Close(p.w)
}

// pipeSource hands out empty pipes.
type pipeSource interface {
	get() *spipe   // nil when none can be created (fd limit): copy through a buffer
	put(p *spipe)  // an empty pipe, for reuse
	drop(p *spipe) // a pipe that may still hold bytes: never reused
}

type pipePool struct {
	pool    sync.Pool
	newPipe func() (*spipe, error)
}

var sharedPipes = &pipePool{newPipe: makePipe}

func (pp *pipePool) get() *spipe {
	if v := pp.pool.Get(); v != nil {
		return v.(*spipe)
	}
	p, err := pp.newPipe()
	if err != nil {
		return nil
	}
	return p
}

func (pp *pipePool) put(p *spipe) { pp.pool.Put(p) }

func spliceToPipe(sock, pipeW int) (int, error) {
	n, err := syscall.Splice(sock, nil, pipeW, nil, spliceChunk, spliceFlags)
	return int(n), err
}

// drop closes at once rather than leave the fds to the GC: under fd
// pressure, which is when pipes get dropped, they are wanted back now.
func (pp *pipePool) drop(p *spipe) { p.close() }

// spliceCopy moves src→dst until EOF (nil error) or an error. Each read
// goes through a pipe when one can be had, else through a pooled buffer:
// running short of fds slows a connection down, it never ends it.
func spliceCopy(dst, src *net.TCPConn, p *pair) (int64, error) {
	srcRaw, err := src.SyscallConn()
	if err != nil {
		return bufferedCopy(dst, src, p)
	}
	dstRaw, err := dst.SyscallConn()
	if err != nil {
		return bufferedCopy(dst, src, p)
	}
	var total int64
	for {
		var pp *spipe
		var bp *[]byte
		var n int
		var serr error
		release := func() {
			if pp != nil {
				p.pipes.put(pp)
				pp = nil
			}
			if bp != nil {
				copyBufs.Put(bp)
				bp = nil
			}
		}
		rerr := srcRaw.Read(func(fd uintptr) bool {
			if pp == nil && bp == nil {
				if pp = p.pipes.get(); pp == nil {
					bp = copyBufs.Get().(*[]byte)
				}
			}
			var e error
			if pp != nil {
				n, e = p.spliceIn(int(fd), pp.w)
				if e == syscall.ENOMEM || e == syscall.ENOBUFS {
					// The kernel is short of memory for the pipe's
					// pages: a plain read needs none.
					p.pipes.put(pp) // a failed splice moved nothing
					pp = nil
					bp = copyBufs.Get().(*[]byte)
				}
			}
			if bp != nil {
				n, e = syscall.Read(int(fd), *bp)
			}
			switch e {
			case syscall.EAGAIN:
				// Nothing to read: hold neither pipe nor buffer while waiting.
				release()
				return false
			case syscall.EINTR:
				return false
			}
			if e != nil {
				n = 0
			}
			serr = e
			return true
		})
		if rerr == nil {
			rerr = serr
		}
		if rerr != nil || n == 0 { // n == 0: EOF
			release()
			return total, rerr
		}
		p.touch()
		var w int
		var werr error
		if pp != nil {
			w, werr = p.writeOut(dst, dstRaw, srcRaw, n, func(fd, done int) (int, error) {
				m, e := syscall.Splice(pp.r, nil, fd, nil, n-done, spliceFlags)
				return int(m), e
			})
			if werr != nil {
				// The pipe may still hold bytes: never hand them to
				// another connection.
				p.pipes.drop(pp)
				pp = nil
			}
		} else {
			p.pipeFallbacks.Add(1)
			buf := (*bp)[:n]
			w, werr = p.writeOut(dst, dstRaw, srcRaw, n, func(fd, done int) (int, error) {
				return syscall.Write(fd, buf[done:])
			})
		}
		release()
		total += int64(w)
		if werr != nil {
			return total, werr
		}
	}
}

// writeOut moves n bytes into dst with write(fd, done), waiting for dst to
// be writable as needed. A write blocked for longer than p.blockedCheck
// looks at src every p.blockedCheck (one getsockopt): src is not read while
// this direction waits, so its reset would otherwise go unseen.
func (p *pair) writeOut(dst *net.TCPConn, dstRaw, srcRaw syscall.RawConn, n int, write func(fd, done int) (int, error)) (int, error) {
	done := 0
	armed := false
	defer func() {
		if armed {
			_ = dst.SetWriteDeadline(time.Time{})
		}
	}()
	for done < n {
		var m int
		var e error
		err := dstRaw.Write(func(fd uintptr) bool {
			m, e = write(int(fd), done)
			switch e {
			case syscall.EAGAIN:
				if !armed {
					// The deadline belongs to this direction alone: it
					// is the only writer of dst.
					_ = dst.SetWriteDeadline(time.Now().Add(p.blockedCheck))
					armed = true
				}
				return false
			case syscall.EINTR:
				return false
			}
			return true
		})
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if serr := sourceFailed(srcRaw, p); serr != nil {
				return done, serr
			}
			_ = dst.SetWriteDeadline(time.Now().Add(p.blockedCheck))
			continue
		}
		if err == nil {
			err = e
		}
		if err != nil {
			return done, err
		}
		if m <= 0 {
			return done, io.ErrShortWrite
		}
		done += m
		p.touch()
	}
	return done, nil
}

// sourceFailed reports the error that ended src: a reset, a keepalive or
// retransmission timeout. Each of those closes the connection in the kernel
// (TCP_CLOSE) and leaves its error pending; a FIN does neither. An error
// pending on a connection that is not closed is soft (an ICMP unreachable
// or time exceeded for a segment src sent): the kernel keeps the connection
// and reports that error only if the connection later times out, so the
// pair goes on and the error is left pending.
func sourceFailed(srcRaw syscall.RawConn, p *pair) error {
	p.sourceChecks.Add(1)
	var soErr int
	var gerr error
	if err := srcRaw.Control(func(fd uintptr) {
		var state uint8
		if state, gerr = tcpStateOf(int(fd)); gerr != nil || state != tcpClose {
			return
		}
		soErr, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_ERROR)
	}); err != nil {
		return err // closed
	}
	if gerr != nil {
		return gerr
	}
	if soErr != 0 {
		return syscall.Errno(soErr)
	}
	return nil
}

const tcpClose = 7 // TCP_CLOSE, tcpi_state of a connection the kernel ended

// tcpStateOf is the kernel's TCP state of fd: the first byte of its
// tcp_info, which the kernel copies in part when asked for less.
func tcpStateOf(fd int) (uint8, error) {
	v, err := syscall.GetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_INFO)
	if err != nil {
		return 0, err
	}
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], uint32(v))
	return b[0], nil
}
