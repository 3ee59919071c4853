package rawsys

import (
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Read reads into b: the bytes read, or the error (0 bytes is EOF).
func Read(fd int, b []byte) (int, syscall.Errno) {
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	if e != 0 {
		return -1, e
	}
	return int(n), 0
}

// Write writes b (a datagram, on a connected datagram socket).
func Write(fd int, b []byte) (int, syscall.Errno) {
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	if e != 0 {
		return -1, e
	}
	return int(n), 0
}

// Send writes b on a stream socket without waiting, and without SIGPIPE
// (a peer that has gone is EPIPE); more asks the kernel to hold it for
// what follows (MSG_MORE: a FIN about to be sent leaves in the same
// segment).
func Send(fd int, b []byte, more bool) (int, syscall.Errno) {
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

// SendTo sends the datagram b to to from fd, without waiting: fd is an
// AF_INET socket for an IPv4 destination or an AF_INET6 one, as v6 says
// (then an IPv4 destination is sent mapped).
func SendTo(fd int, b []byte, to netip.AddrPort, v6 bool) syscall.Errno {
	var sa unix.RawSockaddrInet6
	l := PutSockaddr(&sa, to, v6)
	_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)),
		unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&sa)), l)
	return e
}

// Close closes fd. Its error is of no use to a caller that is done with
// fd (on Linux the descriptor is gone even then).
func Close(fd int) { unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0) }

// ShutdownWrite sends a stream's FIN (shutdown SHUT_WR).
func ShutdownWrite(fd int) syscall.Errno {
	_, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), unix.SHUT_WR, 0)
	return e
}

// Splice moves up to n bytes from in to out, one of them a pipe, without
// waiting on either.
func Splice(in, out, n int) (int, syscall.Errno) {
	m, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	if e != 0 {
		return -1, e
	}
	return int(m), 0
}

// Accept accepts one connection on lfd, non-blocking and close-on-exec,
// with the peer's address written in sa and parsed (PeerAddrPort).
func Accept(lfd int, sa *unix.RawSockaddrAny) (int, netip.AddrPort, syscall.Errno) {
	l := uint32(unix.SizeofSockaddrAny)
	fd, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(lfd), uintptr(unsafe.Pointer(sa)), uintptr(unsafe.Pointer(&l)), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	return int(fd), PeerAddrPort(sa), 0
}

// Peer is the IP address and port fd is connected to, read into sa
// (PeerAddrPort); invalid when the kernel has none (a connect in
// progress) or fd is a Unix socket.
func Peer(fd int, sa *unix.RawSockaddrAny) netip.AddrPort {
	l := uint32(unix.SizeofSockaddrAny)
	if _, _, e := unix.RawSyscall(unix.SYS_GETPEERNAME, uintptr(fd), uintptr(unsafe.Pointer(sa)), uintptr(unsafe.Pointer(&l))); e != 0 {
		return netip.AddrPort{}
	}
	return PeerAddrPort(sa)
}

// Socket is a new socket of the family for an address a (AF_INET for an
// IPv4 one, else AF_INET6), of type typ and protocol proto, non-blocking
// and close-on-exec.
func Socket(a netip.Addr, typ, proto int) (int, syscall.Errno) {
	family := unix.AF_INET6
	if a.Is4() {
		family = unix.AF_INET
	}
	fd, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), uintptr(typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC), uintptr(proto))
	if e != 0 {
		return -1, e
	}
	return int(fd), 0
}

// Connect connects fd, a socket made by Socket for to's address, to to.
// A stream socket's connect is under way (EINPROGRESS) when it returns; a
// datagram socket's only sets the peer.
func Connect(fd int, to netip.AddrPort) syscall.Errno {
	var sa unix.RawSockaddrInet6
	l := PutSockaddr(&sa, to, !to.Addr().Is4())
	_, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), l)
	return e
}

// ConnectUnix is a new non-blocking Unix stream socket connected to path;
// a full backlog answers EAGAIN, which is a failure, as for net.Dial.
func ConnectUnix(path string) (int, syscall.Errno) {
	s, _, e := unix.RawSyscall(unix.SYS_SOCKET, unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if e != 0 {
		return -1, e
	}
	fd := int(s)
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		Close(fd)
		if errno, ok := err.(syscall.Errno); ok {
			return -1, errno
		}
		return -1, unix.EINVAL
	}
	return fd, 0
}

// SetsockoptInt sets the int option opt of level on fd to v.
func SetsockoptInt(fd, level, opt, v int) syscall.Errno {
	i := int32(v)
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&i)), 4, 0)
	return e
}

// SoError is the socket's pending error (a finished connect's outcome),
// which reading clears.
func SoError(fd int) syscall.Errno {
	var v int32
	l := uint32(4)
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_ERROR, uintptr(unsafe.Pointer(&v)), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return e
	}
	return syscall.Errno(v)
}

// EpollCtl adds (op EPOLL_CTL_ADD), changes or removes fd in ep's
// interest list, for events, with fd as the event's data.
func EpollCtl(ep, op, fd int, events uint32) syscall.Errno {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(ep), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(&ev)), 0, 0)
	return e
}

// EpollPoll is epoll_wait that does not block: the events ready now, in
// evs (0 on an error).
func EpollPoll(ep int, evs []unix.EpollEvent) int {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(unsafe.SliceData(evs))), uintptr(len(evs)), 0, 0, 0)
	if e != 0 {
		return 0
	}
	return int(n)
}
