package rawsys

import (
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A sockaddr is written and read in place: a RawSockaddrInet6 holds
// either family (an AF_INET one is the shorter prefix), so a batch's
// addresses are one array, and no call allocates for an address but
// PeerAddrPort's of a scoped IPv6 peer (the zone's name).

// PutSockaddr writes to into sa for a socket of the family v6 says (an
// IPv4 address to an AF_INET6 socket goes mapped) and returns the
// sockaddr's length. Every field is written: sa may be a batch's, reused.
func PutSockaddr(sa *unix.RawSockaddrInet6, to netip.AddrPort, v6 bool) uintptr {
	if v6 {
		*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Port: htons(to.Port()), Addr: to.Addr().As16()}
		return unix.SizeofSockaddrInet6
	}
	*(*unix.RawSockaddrInet4)(unsafe.Pointer(sa)) = unix.RawSockaddrInet4{Family: unix.AF_INET, Port: htons(to.Port()), Addr: to.Addr().As4()}
	return unix.SizeofSockaddrInet4
}

// AddrPort is the address in sa, one the kernel wrote for a datagram's
// source: IPv4-mapped addresses unmapped (a dual-stack socket's IPv4
// client is the same client as on an IPv4 socket), the scope dropped;
// invalid for any family but AF_INET and AF_INET6.
func AddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		a := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), ntohs(a.Port))
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), ntohs(sa.Port))
	}
	return netip.AddrPort{}
}

// PeerAddrPort is the IP and port in sa, a connection's peer, as the
// kernel wrote them: an IPv4-mapped address stays mapped, a scoped IPv6
// one has its interface as zone; invalid for anything but AF_INET and
// AF_INET6 (a Unix socket's peer).
func PeerAddrPort(sa *unix.RawSockaddrAny) netip.AddrPort {
	switch sa.Addr.Family {
	case unix.AF_INET:
		a := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), ntohs(a.Port))
	case unix.AF_INET6:
		a := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
		ip := netip.AddrFrom16(a.Addr)
		if a.Scope_id != 0 {
			ip = ip.WithZone(zoneName(a.Scope_id))
		}
		return netip.AddrPortFrom(ip, ntohs(a.Port))
	}
	return netip.AddrPort{}
}

func zoneName(index uint32) string {
	if ifi, err := net.InterfaceByIndex(int(index)); err == nil {
		return ifi.Name
	}
	return uitoa(index)
}

func uitoa(v uint32) string {
	var b [10]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}

// ntohs and htons: a sockaddr's port is in network order.
func ntohs(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}

func htons(p uint16) uint16 {
	var n uint16
	b := (*[2]byte)(unsafe.Pointer(&n))
	b[0], b[1] = byte(p>>8), byte(p)
	return n
}
