package evloop

import (
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The socket calls of a loop are non-blocking, so they go straight to the
// kernel (RawSyscall): the runtime's entersyscall/exitsyscall hooks around
// them cost more than many of the calls themselves, and a call that cannot
// block has nothing to hand its P over for. The loop never blocks in a
// system call: it sleeps in the runtime's poller (see Loop.wait).

func rawRead(fd int, b []byte) (int, syscall.Errno) {
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	if e != 0 {
		return -1, e
	}
	return int(n), 0
}

// rawSend writes b; more asks the kernel to hold it for what follows (our
// FIN, when the peer's is queued already), so data and FIN leave in one
// segment.
func rawSend(fd int, b []byte, more bool) (int, syscall.Errno) {
	flags := unix.MSG_NOSIGNAL | unix.MSG_DONTWAIT
	if more {
		flags |= unix.MSG_MORE
	}
	n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), uintptr(flags), 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(n), 0
}

func rawClose(fd int) { unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0) }

func rawShutdownWrite(fd int) syscall.Errno {
	_, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), unix.SHUT_WR, 0)
	return e
}

const spliceFlags = unix.SPLICE_F_MOVE | unix.SPLICE_F_NONBLOCK

func rawSplice(in, out, n int) (int, syscall.Errno) {
	m, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), spliceFlags)
	if e != 0 {
		return -1, e
	}
	return int(m), 0
}

// rawAccept accepts one connection, non-blocking and close-on-exec, and
// returns the peer's address parsed without allocating.
func rawAccept(lfd int, sa *unix.RawSockaddrAny) (int, netip.AddrPort, syscall.Errno) {
	l := uint32(unix.SizeofSockaddrAny)
	fd, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(lfd), uintptr(unsafe.Pointer(sa)), uintptr(unsafe.Pointer(&l)), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	return int(fd), sockaddrAddrPort(sa), 0
}

// sockaddrAddrPort is the IP and port of an AF_INET or AF_INET6 address,
// invalid for anything else (a Unix socket's peer).
func sockaddrAddrPort(sa *unix.RawSockaddrAny) netip.AddrPort {
	switch sa.Addr.Family {
	case unix.AF_INET:
		a := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		p := (*[2]byte)(unsafe.Pointer(&a.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(p[0])<<8|uint16(p[1]))
	case unix.AF_INET6:
		a := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
		p := (*[2]byte)(unsafe.Pointer(&a.Port))
		ip := netip.AddrFrom16(a.Addr)
		if a.Scope_id != 0 {
			ip = ip.WithZone(zoneName(a.Scope_id))
		}
		return netip.AddrPortFrom(ip, uint16(p[0])<<8|uint16(p[1]))
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

// rawConnect starts a non-blocking TCP connect to ap. quickAckOff leaves
// the handshake's last ACK to ride on the first data (the replay), one
// segment fewer per connection.
func rawConnect(ap netip.AddrPort, quickAckOff bool) (fd int, err syscall.Errno) {
	var sa unix.RawSockaddrAny
	var sl uintptr
	family := unix.AF_INET
	if ap.Addr().Is4() {
		a := (*unix.RawSockaddrInet4)(unsafe.Pointer(&sa))
		a.Family = unix.AF_INET
		a.Addr = ap.Addr().As4()
		p := (*[2]byte)(unsafe.Pointer(&a.Port))
		p[0], p[1] = byte(ap.Port()>>8), byte(ap.Port())
		sl = unix.SizeofSockaddrInet4
	} else {
		family = unix.AF_INET6
		a := (*unix.RawSockaddrInet6)(unsafe.Pointer(&sa))
		a.Family = unix.AF_INET6
		a.Addr = ap.Addr().As16()
		p := (*[2]byte)(unsafe.Pointer(&a.Port))
		p[0], p[1] = byte(ap.Port()>>8), byte(ap.Port())
		sl = unix.SizeofSockaddrInet6
	}
	s, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if e != 0 {
		return -1, e
	}
	fd = int(s)
	if quickAckOff {
		zero := int32(0)
		unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_QUICKACK, uintptr(unsafe.Pointer(&zero)), 4, 0)
	}
	_, _, e = unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), sl)
	if e != 0 && e != unix.EINPROGRESS {
		rawClose(fd)
		return -1, e
	}
	return fd, 0
}

// rawConnectUnix connects to a Unix stream socket; a full backlog answers
// EAGAIN, which is a failure of the attempt, as for net.Dial.
func rawConnectUnix(path string) (int, syscall.Errno) {
	s, _, e := unix.RawSyscall(unix.SYS_SOCKET, unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if e != 0 {
		return -1, e
	}
	fd := int(s)
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		rawClose(fd)
		if errno, ok := err.(syscall.Errno); ok {
			return -1, errno
		}
		return -1, unix.EINVAL
	}
	return fd, 0
}

// soError is the socket's pending error (a finished connect's outcome).
func soError(fd int) syscall.Errno {
	var v int32
	l := uint32(4)
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_ERROR, uintptr(unsafe.Pointer(&v)), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return e
	}
	return syscall.Errno(v)
}

func epollCtl(ep, op, fd int, events uint32) syscall.Errno {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(ep), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(&ev)), 0, 0)
	return e
}

// epollPoll is epoll_wait that does not block.
func epollPoll(ep int, evs []unix.EpollEvent) int {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(unsafe.SliceData(evs))), uintptr(len(evs)), 0, 0, 0)
	if e != 0 {
		return 0
	}
	return int(n)
}
