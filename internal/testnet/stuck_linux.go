//go:build linux

package testnet

import (
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"
)

// StuckAddr returns the address of a loopback listener whose accept queue
// is full (backlog 0, nothing accepts): a connect to it neither completes
// nor fails — the kernel drops its SYNs — until the caller gives up, as
// towards a host that drops SYNs. ok is false when the kernel kept
// completing connects into the queue, so no dial can be made to hang here.
func StuckAddr(tb testing.TB) (addr string, ok bool) {
	tb.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		tb.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		tb.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		tb.Fatal(err)
	}
	addr = fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	for range 16 { // fill the queue: connects complete into it until it is full
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr, true
		}
		tb.Cleanup(func() { c.Close() })
	}
	return addr, false
}
