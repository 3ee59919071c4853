package listen

import (
	"context"
	"fmt"
	"net"
	"net/netip"
)

// UDP binds a UDP socket on addr ("host:port"; an empty host is every
// interface).
func UDP(ctx context.Context, addr string) (net.PacketConn, error) {
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return nil, fmt.Errorf("protoplex: listen udp %s: %w", addr, err)
	}
	return pc, nil
}

// Serves reports whether a socket bound on local is what the configured
// address addr asks for: the same port and the same IP, where every
// unspecified address (an empty host, 0.0.0.0, ::) is the same, since a
// service manager binds "443" on [::] for IPv4 and IPv6 alike. A host name
// in addr is resolved. This matches a socket passed by socket activation to
// its server.listen_udp entry.
func Serves(addr string, local net.Addr) bool {
	want, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return false
	}
	var got netip.AddrPort
	switch a := local.(type) {
	case *net.UDPAddr:
		got = a.AddrPort()
	case *net.TCPAddr:
		got = a.AddrPort()
	default:
		return false
	}
	w := want.AddrPort()
	if w.Port() != got.Port() {
		return false
	}
	wIP, gIP := w.Addr().Unmap(), got.Addr().Unmap()
	if !wIP.IsValid() || wIP.IsUnspecified() {
		return gIP.IsUnspecified()
	}
	return wIP == gIP
}
