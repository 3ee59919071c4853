//go:build !linux

package udp

import (
	"context"
	"net"
	"net/netip"
	"syscall"
)

// reusePortOK: elsewhere SO_REUSEPORT does not spread datagrams (BSDs give
// them to the last socket bound), so each address has one socket.
const reusePortOK = false

func reusePort(_, _ string, _ syscall.RawConn) error { return nil }

// ListenConfig is how the engine binds a listen_udp address.
func ListenConfig() net.ListenConfig { return net.ListenConfig{} }

// Bind binds addr as the first socket of a listen_udp address.
func Bind(ctx context.Context, addr string) (net.PacketConn, error) {
	var lc net.ListenConfig
	return lc.ListenPacket(ctx, "udp", addr)
}

// dialDatagram connects a UDP socket to ap, set up as so.
func dialDatagram(ap netip.AddrPort, so upSocket) (upConn, error) {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	if so.rcvbuf > 0 {
		_ = c.SetReadBuffer(so.rcvbuf)
	}
	return c, nil
}
