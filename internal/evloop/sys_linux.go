package evloop

import (
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/darkit/protoplex/internal/rawsys"
)

// The socket calls of a loop are non-blocking, so they go straight to the
// kernel (internal/rawsys: RawSyscall, no allocation). The loop never
// blocks in a system call: it sleeps in the runtime's poller (see
// Loop.wait).

// rawConnect starts a non-blocking TCP connect to ap. quickAckOff leaves
// the handshake's last ACK to ride on the first data (the replay), one
// segment fewer per connection.
func rawConnect(ap netip.AddrPort, quickAckOff bool) (fd int, err syscall.Errno) {
	fd, e := rawsys.Socket(ap.Addr(), unix.SOCK_STREAM, unix.IPPROTO_TCP)
	if e != 0 {
		return -1, e
	}
	if quickAckOff {
		_ = rawsys.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUICKACK, 0)
	}
	if e := rawsys.Connect(fd, ap); e != 0 && e != unix.EINPROGRESS {
		rawsys.Close(fd)
		return -1, e
	}
	return fd, 0
}
