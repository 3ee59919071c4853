package udp

import (
	"context"
	"net"
	"net/netip"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// reusePortOK: an address is bound by several sockets, and the kernel
// spreads the clients over them by a hash of their address and port.
const reusePortOK = true

// ListenConfig is how the engine binds a listen_udp address: with
// SO_REUSEPORT, so that its other sockets can join the first.
func ListenConfig() net.ListenConfig { return net.ListenConfig{Control: reusePort} }

// Bind binds addr as the first socket of a listen_udp address. With
// SO_REUSEPORT a second process on the port would silently share its
// datagrams: a bind without it goes first, and fails as usual when any
// socket holds the address.
func Bind(ctx context.Context, addr string) (net.PacketConn, error) {
	if _, port, err := net.SplitHostPort(addr); err == nil && port != "0" {
		var lc net.ListenConfig
		probe, err := lc.ListenPacket(ctx, "udp", addr)
		if err != nil {
			return nil, err
		}
		probe.Close()
	}
	lc := ListenConfig()
	return lc.ListenPacket(ctx, "udp", addr)
}

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

// dialDatagram connects a new non-blocking UDP socket to ap, set up as so:
// socket(2), connect(2), and the runtime poller's registration, which
// os.NewFile makes of a non-blocking descriptor; net.DialUDP adds a
// setsockopt and a getsockname and getpeername per flow that nothing here
// reads.
func dialDatagram(ap netip.AddrPort, so upSocket) (upConn, error) {
	fd, err := rawDatagramSocket(ap, so)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "udp"), nil
}
