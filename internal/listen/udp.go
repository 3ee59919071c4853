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

// Named matches sockets bound already (passed by socket activation) to the
// configured addresses that name them: for each of locals, the index in
// addrs of the first entry not taken by an earlier socket with the same
// port and the same IP, where every unspecified address (an empty host,
// 0.0.0.0, ::) is the same, since a service manager binds "443" on [::]
// for IPv4 and IPv6 alike; -1 where no entry names it. A host name in
// addrs is resolved, each entry once.
func Named(addrs []string, locals []net.Addr) []int {
	want := make([]netip.AddrPort, len(addrs))
	valid := make([]bool, len(addrs))
	for i, a := range addrs {
		if u, err := net.ResolveUDPAddr("udp", a); err == nil {
			want[i], valid[i] = u.AddrPort(), true
		}
	}
	taken := make([]bool, len(addrs))
	out := make([]int, len(locals))
	for j, l := range locals {
		out[j] = -1
		got, ok := addrPort(l)
		for i := range addrs {
			if ok && valid[i] && !taken[i] && same(want[i], got) {
				out[j], taken[i] = i, true
				break
			}
		}
	}
	return out
}

func addrPort(a net.Addr) (netip.AddrPort, bool) {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort(), true
	case *net.TCPAddr:
		return a.AddrPort(), true
	}
	return netip.AddrPort{}, false
}

// same: want (a configured address) names got (a bound socket's).
func same(want, got netip.AddrPort) bool {
	if want.Port() != got.Port() {
		return false
	}
	w, g := want.Addr().Unmap(), got.Addr().Unmap()
	if !w.IsValid() || w.IsUnspecified() {
		return g.IsUnspecified()
	}
	return w == g
}
