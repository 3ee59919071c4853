package udp

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// reusePortOK: an address is bound by several sockets, and the kernel
// spreads the clients over them by a hash of their address and port.
const reusePortOK = true

// reusePort is a ListenConfig.Control that sets SO_REUSEPORT.
func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}
