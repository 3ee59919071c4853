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

// rawSendto sends b to to from fd, an AF_INET socket for an IPv4
// destination or an AF_INET6 one (then an IPv4 one is sent mapped).
func rawSendto(fd int, b []byte, to netip.AddrPort, v6 bool) syscall.Errno {
	var sa unix.RawSockaddrInet6
	l := putSockaddr(&sa, to, v6)
	_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)),
		unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&sa)), l)
	return e
}

// putSockaddr writes to into sa for a socket of the family v6 says and
// returns the sockaddr's length. Every field is written: sa may be a
// batch's, reused.
func putSockaddr(sa *unix.RawSockaddrInet6, to netip.AddrPort, v6 bool) uintptr {
	if v6 {
		*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Port: htons(to.Port()), Addr: to.Addr().As16()}
		return unix.SizeofSockaddrInet6
	}
	*(*unix.RawSockaddrInet4)(unsafe.Pointer(sa)) = unix.RawSockaddrInet4{Family: unix.AF_INET, Port: htons(to.Port()), Addr: to.Addr().As4()}
	return unix.SizeofSockaddrInet4
}

// cmsgBuf is room for one control message of an int: UDP_GRO's segment
// size read, UDP_SEGMENT's written. uint64s keep it aligned as a
// cmsghdr must be.
type cmsgBuf [4]uint64

func (c *cmsgBuf) bytes() []byte { return unsafe.Slice((*byte)(unsafe.Pointer(c)), unsafe.Sizeof(*c)) }

// rawRecvGRO reads from fd, a socket with UDP_GRO on, one datagram or a
// train of them the kernel coalesced: seg is then the size of each but the
// last (0: one datagram). A train larger than b (the kernel makes none
// above 64 KiB) is EMSGSIZE: its datagrams are lost, the socket goes on.
func rawRecvGRO(fd int, b []byte, oob *cmsgBuf) (n, seg int, errno syscall.Errno) {
	iov := unix.Iovec{Base: unsafe.SliceData(b)}
	iov.SetLen(len(b))
	ob := oob.bytes()
	msg := unix.Msghdr{Iov: &iov, Control: unsafe.SliceData(ob)}
	msg.SetIovlen(1)
	msg.SetControllen(len(ob))
	r, _, e := unix.RawSyscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), unix.MSG_DONTWAIT)
	if e != 0 {
		return -1, 0, e
	}
	if msg.Flags&unix.MSG_TRUNC != 0 {
		return -1, 0, unix.EMSGSIZE
	}
	if msg.Controllen >= uint64(unix.CmsgLen(4)) {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&ob[0]))
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO {
			seg = int(*(*int32)(unsafe.Pointer(&ob[unix.CmsgLen(0)])))
		}
	}
	return int(r), seg, 0
}

// rawSendGSO sends b to to from fd as a train of datagrams of seg bytes
// each (the last may be shorter), one system call (UDP_SEGMENT): the
// kernel, or the network card, cuts it.
func rawSendGSO(fd int, b []byte, seg int, to netip.AddrPort, v6 bool, oob *cmsgBuf) syscall.Errno {
	var sa unix.RawSockaddrInet6
	l := putSockaddr(&sa, to, v6)
	iov := unix.Iovec{Base: unsafe.SliceData(b)}
	iov.SetLen(len(b))
	ob := oob.bytes()
	h := (*unix.Cmsghdr)(unsafe.Pointer(&ob[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	*(*uint16)(unsafe.Pointer(&ob[unix.CmsgLen(0)])) = uint16(seg)
	msg := unix.Msghdr{Name: (*byte)(unsafe.Pointer(&sa)), Namelen: uint32(l), Iov: &iov, Control: unsafe.SliceData(ob)}
	msg.SetIovlen(1)
	msg.SetControllen(unix.CmsgSpace(2))
	_, _, e := unix.RawSyscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), unix.MSG_DONTWAIT)
	return e
}

// setGRO turns UDP_GRO on for fd: the kernel then hands a train of
// datagrams from one sender (a QUIC server's GSO burst) to one read.
// False where the kernel has no UDP_GRO (before Linux 5.0).
func setGRO(fd int) bool {
	v := int32(1)
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_UDP, unix.UDP_GRO, uintptr(unsafe.Pointer(&v)), 4, 0)
	return e == 0
}

// groOn reports whether fd has UDP_GRO on.
func groOn(fd int) bool {
	v, err := unix.GetsockoptInt(fd, unix.SOL_UDP, unix.UDP_GRO)
	return err == nil && v != 0
}

// sockaddrAddr is the address in sa, a sockaddr the kernel wrote for a
// datagram's source, IPv4-mapped addresses unmapped; invalid for any
// family but AF_INET and AF_INET6.
func sockaddrAddr(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		a := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), ntohs(a.Port))
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), ntohs(sa.Port))
	}
	return netip.AddrPort{}
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
	var sa unix.RawSockaddrInet6
	v6 := !ap.Addr().Is4()
	l := putSockaddr(&sa, ap, v6)
	family := uintptr(unix.AF_INET)
	if v6 {
		family = unix.AF_INET6
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
