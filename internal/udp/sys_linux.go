package udp

import (
	"net"
	"net/netip"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The socket calls of a flow on an event loop are non-blocking, so they go
// straight to the kernel (RawSyscall, as internal/evloop's own): the
// runtime's entersyscall/exitsyscall around each would cost more than
// some of the calls, and a call that cannot block has no P to hand over.
// The addresses are raw sockaddrs: no allocation per datagram.

func rawRead(fd int, b []byte) (int, syscall.Errno) {
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	if e != 0 {
		return -1, e
	}
	return int(n), 0
}

func rawWrite(fd int, b []byte) (int, syscall.Errno) {
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	if e != 0 {
		return -1, e
	}
	return int(n), 0
}

// rawRecvfrom reads one datagram into b and returns its source, IPv4-mapped
// addresses unmapped (invalid for any other family).
func rawRecvfrom(fd int, b []byte, sa *unix.RawSockaddrAny) (int, netip.AddrPort, syscall.Errno) {
	l := uint32(unix.SizeofSockaddrAny)
	n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)),
		unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(sa)), uintptr(unsafe.Pointer(&l)))
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	var ap netip.AddrPort
	switch sa.Addr.Family {
	case unix.AF_INET:
		a := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		ap = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), ntohs(a.Port))
	case unix.AF_INET6:
		a := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
		ap = netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), ntohs(a.Port))
	}
	return int(n), ap, 0
}

// rawSendto sends b to to from fd, an AF_INET socket for an IPv4
// destination or an AF_INET6 one (then an IPv4 one is sent mapped).
func rawSendto(fd int, b []byte, to netip.AddrPort, v6 bool) syscall.Errno {
	var sa unix.RawSockaddrAny
	l := uintptr(unix.SizeofSockaddrInet4)
	if v6 {
		a := (*unix.RawSockaddrInet6)(unsafe.Pointer(&sa))
		a.Family, a.Port, a.Addr = unix.AF_INET6, htons(to.Port()), to.Addr().As16()
		l = unix.SizeofSockaddrInet6
	} else {
		a := (*unix.RawSockaddrInet4)(unsafe.Pointer(&sa))
		a.Family, a.Port, a.Addr = unix.AF_INET, htons(to.Port()), to.Addr().As4()
	}
	_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)),
		unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&sa)), l)
	return e
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

// rawDatagramSocket is a non-blocking UDP socket connected to ap, set up
// as so: socket(2), a setsockopt when so asks for a buffer, and
// connect(2), raw (a UDP connect only sets the peer: it never blocks); the
// error names the call that failed.
func rawDatagramSocket(ap netip.AddrPort, so upSocket) (int, error) {
	var sa unix.RawSockaddrAny
	family, l := uintptr(unix.AF_INET6), uintptr(unix.SizeofSockaddrInet6)
	if ap.Addr().Is4() {
		a := (*unix.RawSockaddrInet4)(unsafe.Pointer(&sa))
		a.Family, a.Port, a.Addr = unix.AF_INET, htons(ap.Port()), ap.Addr().As4()
		family, l = unix.AF_INET, unix.SizeofSockaddrInet4
	} else {
		a := (*unix.RawSockaddrInet6)(unsafe.Pointer(&sa))
		a.Family, a.Port, a.Addr = unix.AF_INET6, htons(ap.Port()), ap.Addr().As16()
	}
	fail := func(op string, e syscall.Errno) error {
		return &net.OpError{Op: "dial", Net: "udp", Addr: net.UDPAddrFromAddrPort(ap), Err: os.NewSyscallError(op, e)}
	}
	fd, _, e := unix.RawSyscall(unix.SYS_SOCKET, family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if e != 0 {
		return -1, fail("socket", e)
	}
	if so.rcvbuf > 0 {
		// Before connect, so before any datagram goes up. A refusal
		// (a kernel that caps it lower) keeps the default: not an error.
		v := int32(so.rcvbuf)
		unix.RawSyscall6(unix.SYS_SETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_RCVBUF, uintptr(unsafe.Pointer(&v)), 4, 0)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_CONNECT, fd, uintptr(unsafe.Pointer(&sa)), l); e != 0 {
		rawClose(int(fd))
		return -1, fail("connect", e)
	}
	return int(fd), nil
}

func rawClose(fd int) { unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0) }
