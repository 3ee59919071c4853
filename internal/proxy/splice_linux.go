package proxy

import (
	"net"
	"runtime"
	"sync"
	"syscall"
)

// Why not io.Copy: net.TCPConn.ReadFrom splices too, but holds a pipe (two
// fds and 64 KiB of kernel buffer) for as long as it waits for data, i.e.
// for the whole life of an idle connection, and it hides progress, so an idle
// timeout cannot see activity. Here a pipe is taken from the pool only once
// the source is readable and returned as soon as it is drained.

const (
	spliceChunk  = 1 << 20
	pipeSize     = 1 << 20
	fSetPipeSize = 1031 // F_SETPIPE_SZ
)

type spipe struct{ r, w int }

var pipes = sync.Pool{New: func() any {
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		return nil
	}
	// A larger pipe moves more per splice call on bulk streams; the kernel
	// only commits pages actually filled. Failure keeps the 64 KiB default.
	_, _, _ = syscall.Syscall(syscall.SYS_FCNTL, uintptr(fds[1]), fSetPipeSize, pipeSize)
	p := &spipe{r: fds[0], w: fds[1]}
	runtime.AddCleanup(p, func(fds [2]int) { syscall.Close(fds[0]); syscall.Close(fds[1]) }, fds)
	return p
}}

const spliceFlags = 0x1 | 0x2 // SPLICE_F_MOVE | SPLICE_F_NONBLOCK

// spliceCopy moves src→dst through a pipe until EOF (nil error) or an error.
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
		var inPipe int
		var serr error
		eof := false
		rerr := srcRaw.Read(func(fd uintptr) bool {
			if pp == nil {
				v := pipes.Get()
				if v == nil {
					serr = syscall.EMFILE
					return true
				}
				pp = v.(*spipe)
			}
			n, e := syscall.Splice(int(fd), nil, pp.w, nil, spliceChunk, spliceFlags)
			if e == syscall.EAGAIN {
				// Nothing to read: give the pipe back while we wait.
				pipes.Put(pp)
				pp = nil
				return false
			}
			if e == syscall.EINTR {
				return false
			}
			serr = e
			if e == nil && n == 0 {
				eof = true
			}
			inPipe = int(n)
			return true
		})
		if rerr != nil {
			if pp != nil {
				pipes.Put(pp)
			}
			return total, rerr
		}
		if serr != nil {
			if pp != nil {
				pipes.Put(pp)
			}
			return total, serr
		}
		if eof {
			pipes.Put(pp)
			return total, nil
		}
		p.touch()
		// Drain the pipe into dst, waiting for dst to be writable as needed.
		var werr error
		for inPipe > 0 && werr == nil {
			var wrote int
			var e2 error
			werr = dstRaw.Write(func(fd uintptr) bool {
				n, e := syscall.Splice(pp.r, nil, int(fd), nil, inPipe, spliceFlags)
				if e == syscall.EAGAIN || e == syscall.EINTR {
					return false
				}
				wrote, e2 = int(n), e
				return true
			})
			if werr == nil {
				werr = e2
			}
			inPipe -= wrote
			total += int64(wrote)
		}
		if werr != nil {
			// The pipe may still hold bytes: drop it (its cleanup closes
			// the fds) rather than hand stale bytes to another connection.
			return total, werr
		}
		pipes.Put(pp)
	}
}
