//go:build unix

package udp

import (
	"errors"
	"sync"
	"syscall"
)

var replyBufs = sync.Pool{New: func() any { b := make([]byte, maxDatagram); return &b }}

// readReplies calls fn with each datagram up receives until up is closed.
// It holds no buffer while it waits: the datagram is read into a pooled
// one when the socket is readable.
func readReplies(up upConn, fn func([]byte)) {
	rc, err := up.SyscallConn()
	if err != nil {
		return
	}
	for {
		var bp *[]byte
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			bp = replyBufs.Get().(*[]byte)
			n, rerr = syscall.Read(int(fd), *bp)
			if rerr == syscall.EAGAIN || rerr == syscall.EINTR {
				replyBufs.Put(bp)
				bp = nil
				return false
			}
			return true
		})
		if err != nil {
			if bp != nil {
				replyBufs.Put(bp)
			}
			return
		}
		if rerr == nil && n >= 0 {
			fn((*bp)[:n])
		} else if !errors.Is(rerr, syscall.ECONNREFUSED) {
			// ECONNREFUSED: an ICMP error for an earlier datagram; the
			// flow goes on. Any other error ends the reader.
			replyBufs.Put(bp)
			return
		}
		replyBufs.Put(bp)
	}
}
