package udp

import (
	"net"
	"net/netip"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/darkit/protoplex/internal/rawsys"
)

// The socket calls of a flow on an event loop are non-blocking, so they go
// straight to the kernel (internal/rawsys, as internal/evloop's own).

// rawDatagramSocket is a non-blocking UDP socket connected to ap, set up
// as so: socket(2), a setsockopt when so asks for a buffer, and
// connect(2), raw (a UDP connect only sets the peer: it never blocks); the
// error names the call that failed.
func rawDatagramSocket(ap netip.AddrPort, so upSocket) (int, error) {
	fail := func(op string, e syscall.Errno) error {
		return &net.OpError{Op: "dial", Net: "udp", Addr: net.UDPAddrFromAddrPort(ap), Err: os.NewSyscallError(op, e)}
	}
	fd, e := rawsys.Socket(ap.Addr(), unix.SOCK_DGRAM, 0)
	if e != 0 {
		return -1, fail("socket", e)
	}
	if so.rcvbuf > 0 {
		// Before connect, so before any datagram goes up. A refusal
		// (a kernel that caps it lower) keeps the default: not an error.
		_ = rawsys.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, so.rcvbuf)
	}
	if e := rawsys.Connect(fd, ap); e != 0 {
		rawsys.Close(fd)
		return -1, fail("connect", e)
	}
	return fd, nil
}
