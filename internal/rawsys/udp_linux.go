package rawsys

import (
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The datagram calls of the UDP engine on a loop: a batch of datagrams
// per call (recvmmsg, sendmmsg), or a train of one peer's datagrams as
// one buffer (UDP_GRO, UDP_SEGMENT).

// Recvmmsg reads up to len(hs) datagrams into hs's buffers without
// waiting: how many.
func Recvmmsg(fd int, hs []unix.Mmsghdr) (int, syscall.Errno) {
	return mmsg(unix.SYS_RECVMMSG, fd, hs)
}

// Sendmmsg sends hs's messages in order without waiting: how many went.
// It stops at the first the kernel refuses, which is an error only when
// it is the first of the call: the next call starting there learns it.
func Sendmmsg(fd int, hs []unix.Mmsghdr) (int, syscall.Errno) {
	return mmsg(unix.SYS_SENDMMSG, fd, hs)
}

func mmsg(trap uintptr, fd int, hs []unix.Mmsghdr) (int, syscall.Errno) {
	n, _, e := unix.RawSyscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(hs))), uintptr(len(hs)),
		unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(n), 0
}

// Cmsg is room for one control message of an int: UDP_GRO's segment size
// read, UDP_SEGMENT's written. uint64s keep it aligned as a cmsghdr must
// be.
type Cmsg [4]uint64

func (c *Cmsg) bytes() []byte { return unsafe.Slice((*byte)(unsafe.Pointer(c)), unsafe.Sizeof(*c)) }

// RecvGRO reads from fd, a socket with UDP_GRO on, one datagram or a
// train of them the kernel coalesced: seg is then the size of each but the
// last (0: one datagram). A train larger than b (the kernel makes none
// above 64 KiB) is EMSGSIZE: its datagrams are lost, the socket goes on.
func RecvGRO(fd int, b []byte, oob *Cmsg) (n, seg int, errno syscall.Errno) {
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

// SendGSO sends b to to from fd (of the family v6 says, as SendTo) as a
// train of datagrams of seg bytes each (the last may be shorter), one
// system call (UDP_SEGMENT): the kernel, or the network card, cuts it.
func SendGSO(fd int, b []byte, seg int, to netip.AddrPort, v6 bool, oob *Cmsg) syscall.Errno {
	var sa unix.RawSockaddrInet6
	l := PutSockaddr(&sa, to, v6)
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

// SetGRO turns UDP_GRO on for fd: the kernel then hands a train of
// datagrams from one sender (a QUIC server's GSO burst) to one read.
// False where the kernel has no UDP_GRO (before Linux 5.0).
func SetGRO(fd int) bool {
	return SetsockoptInt(fd, unix.SOL_UDP, unix.UDP_GRO, 1) == 0
}

// GROOn reports whether fd has UDP_GRO on.
func GROOn(fd int) bool {
	v, err := unix.GetsockoptInt(fd, unix.SOL_UDP, unix.UDP_GRO)
	return err == nil && v != 0
}
