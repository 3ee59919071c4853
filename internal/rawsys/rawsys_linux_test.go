package rawsys

import (
	"net/netip"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestSockaddrRoundTrip: an address written for a socket of either family
// reads back as itself (an IPv4 one written for an AF_INET6 socket goes
// mapped and comes back unmapped), at the length of its family.
func TestSockaddrRoundTrip(t *testing.T) {
	cases := []struct {
		ap     string
		v6     bool
		family uint16
		length uintptr
		back   string // AddrPort's reading
		peer   string // PeerAddrPort's reading
	}{
		{"127.0.0.1:53", false, unix.AF_INET, unix.SizeofSockaddrInet4, "127.0.0.1:53", "127.0.0.1:53"},
		{"192.0.2.7:65535", false, unix.AF_INET, unix.SizeofSockaddrInet4, "192.0.2.7:65535", "192.0.2.7:65535"},
		{"127.0.0.1:4433", true, unix.AF_INET6, unix.SizeofSockaddrInet6, "127.0.0.1:4433", "[::ffff:127.0.0.1]:4433"},
		{"[::1]:1", true, unix.AF_INET6, unix.SizeofSockaddrInet6, "[::1]:1", "[::1]:1"},
		{"[2001:db8::5]:258", true, unix.AF_INET6, unix.SizeofSockaddrInet6, "[2001:db8::5]:258", "[2001:db8::5]:258"},
		{"[::ffff:10.0.0.1]:80", true, unix.AF_INET6, unix.SizeofSockaddrInet6, "10.0.0.1:80", "[::ffff:10.0.0.1]:80"},
	}
	for _, c := range cases {
		ap := netip.MustParseAddrPort(c.ap)
		var any unix.RawSockaddrAny
		for i := range any.Pad {
			any.Pad[i] = -1 // a batch's reused address: every field is written
		}
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&any))
		if l := PutSockaddr(sa, ap, c.v6); l != c.length || sa.Family != c.family {
			t.Errorf("%s v6=%v: family %d length %d, want %d %d", c.ap, c.v6, sa.Family, l, c.family, c.length)
		}
		if c.v6 && (sa.Flowinfo != 0 || sa.Scope_id != 0) {
			t.Errorf("%s: flowinfo %d scope %d left from before", c.ap, sa.Flowinfo, sa.Scope_id)
		}
		if got := AddrPort(sa); got.String() != c.back {
			t.Errorf("%s v6=%v: AddrPort %v, want %s", c.ap, c.v6, got, c.back)
		}
		if got := PeerAddrPort(&any); got.String() != c.peer {
			t.Errorf("%s v6=%v: PeerAddrPort %v, want %s", c.ap, c.v6, got, c.peer)
		}
	}
	// Network order on the wire, whatever the host's.
	var sa unix.RawSockaddrInet6
	PutSockaddr(&sa, netip.MustParseAddrPort("[::1]:258"), true)
	if b := (*[2]byte)(unsafe.Pointer(&sa.Port)); b[0] != 1 || b[1] != 2 {
		t.Errorf("port 258 stored as % x, want 01 02", b[:])
	}
	// A scoped peer has its interface as zone: by name, or by number when
	// no interface has it.
	any := unix.RawSockaddrAny{}
	a6 := (*unix.RawSockaddrInet6)(unsafe.Pointer(&any))
	*a6 = unix.RawSockaddrInet6{Family: unix.AF_INET6, Port: htons(9), Addr: netip.MustParseAddr("fe80::1").As16(), Scope_id: 4000000000}
	if got := PeerAddrPort(&any); got.String() != "[fe80::1%4000000000]:9" {
		t.Errorf("scoped peer %v", got)
	}
	if got := AddrPort(a6); got.String() != "[fe80::1]:9" {
		t.Errorf("scoped source %v: the scope is dropped", got)
	}
	a6.Family = unix.AF_UNIX
	if AddrPort(a6).IsValid() || PeerAddrPort(&any).IsValid() {
		t.Error("an AF_UNIX address reads as valid")
	}
}

// TestReadWriteSocketpair: Write and Read move bytes across a socketpair,
// Read of an empty non-blocking socket is EAGAIN, not a wait, and a read
// after the peer has closed is 0 (EOF).
func TestReadWriteSocketpair(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(fds[0])
	b := make([]byte, 16)
	if n, e := Read(fds[0], b); n != -1 || e != unix.EAGAIN {
		t.Fatalf("read of an empty socket: %d %v, want -1 EAGAIN", n, e)
	}
	if n, e := Write(fds[1], []byte("ping")); n != 4 || e != 0 {
		t.Fatalf("write: %d %v", n, e)
	}
	if n, e := Send(fds[1], []byte("pong"), false); n != 4 || e != 0 {
		t.Fatalf("send: %d %v", n, e)
	}
	if n, e := Read(fds[0], b); e != 0 || string(b[:n]) != "pingpong" {
		t.Fatalf("read: %q %v", b[:max(n, 0)], e)
	}
	Close(fds[1])
	if n, e := Read(fds[0], b); n != 0 || e != 0 {
		t.Fatalf("read after the peer closed: %d %v, want 0 (EOF)", n, e)
	}
	// The peer gone, a send is EPIPE and no signal (the test lives).
	if n, e := Send(fds[0], []byte("x"), false); n != -1 || e != unix.EPIPE {
		t.Fatalf("send to a closed peer: %d %v, want EPIPE", n, e)
	}
}

// TestDatagrams: SendTo from an unconnected socket and Write on a
// connected one reach a receiver, Recvmmsg reads them with their source,
// an empty socket is EAGAIN, and a destination the kernel refuses (port
// 0) is EINVAL for that datagram alone.
func TestDatagrams(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	bound := func() (int, netip.AddrPort) {
		fd, e := Socket(lo, unix.SOCK_DGRAM, 0)
		if e != 0 {
			t.Fatal(e)
		}
		t.Cleanup(func() { Close(fd) })
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: lo.As4()}); err != nil {
			t.Fatal(err)
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			t.Fatal(err)
		}
		return fd, netip.AddrPortFrom(lo, uint16(sa.(*unix.SockaddrInet4).Port))
	}
	rx, rxAddr := bound()
	tx, txAddr := bound()
	var hs [4]unix.Mmsghdr
	var bufs [4][64]byte
	var iovs [4]unix.Iovec
	var names [4]unix.RawSockaddrInet6
	for i := range hs {
		iovs[i].Base = &bufs[i][0]
		iovs[i].SetLen(len(bufs[i]))
		hs[i].Hdr.Iov = &iovs[i]
		hs[i].Hdr.SetIovlen(1)
		hs[i].Hdr.Name = (*byte)(unsafe.Pointer(&names[i]))
		hs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
	}
	if n, e := Recvmmsg(rx, hs[:]); n != -1 || e != unix.EAGAIN {
		t.Fatalf("recvmmsg of an empty socket: %d %v, want EAGAIN", n, e)
	}
	if e := SendTo(tx, []byte("one"), netip.AddrPortFrom(lo, 0), false); e != unix.EINVAL {
		t.Fatalf("sendto port 0: %v, want EINVAL", e)
	}
	if e := SendTo(tx, []byte("one"), rxAddr, false); e != 0 {
		t.Fatal(e)
	}
	if e := Connect(tx, rxAddr); e != 0 {
		t.Fatal(e)
	}
	if n, e := Write(tx, []byte("two")); n != 3 || e != 0 {
		t.Fatalf("write: %d %v", n, e)
	}
	n := 0
	for n < 2 {
		// Wait for the datagrams with a bound: poll, not a sleep.
		ready(t, rx, unix.POLLIN, "%d datagrams came, want 2", n)
		k, e := Recvmmsg(rx, hs[n:])
		if e != 0 {
			t.Fatal(e)
		}
		n += k
	}
	if n != 2 {
		t.Fatalf("read %d datagrams, want 2", n)
	}
	for i, want := range []string{"one", "two"} {
		if got := string(bufs[i][:hs[i].Len]); got != want {
			t.Errorf("datagram %d %q, want %q", i, got, want)
		}
		if from := AddrPort(&names[i]); from != txAddr {
			t.Errorf("datagram %d from %v, want %v", i, from, txAddr)
		}
	}
}

// TestStreamConnectAccept: a non-blocking connect is under way
// (EINPROGRESS) or done, its outcome is SoError's 0, Accept gives the
// server the client's address and Peer the client the server's; a socket
// connected to nothing has no peer.
func TestStreamConnectAccept(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	lfd, e := Socket(lo, unix.SOCK_STREAM, unix.IPPROTO_TCP)
	if e != 0 {
		t.Fatal(e)
	}
	defer Close(lfd)
	if err := unix.Bind(lfd, &unix.SockaddrInet4{Addr: lo.As4()}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(lfd, 1); err != nil {
		t.Fatal(err)
	}
	lsa, err := unix.Getsockname(lfd)
	if err != nil {
		t.Fatal(err)
	}
	server := netip.AddrPortFrom(lo, uint16(lsa.(*unix.SockaddrInet4).Port))

	fd, e := Socket(lo, unix.SOCK_STREAM, unix.IPPROTO_TCP)
	if e != 0 {
		t.Fatal(e)
	}
	defer Close(fd)
	var sa unix.RawSockaddrAny
	if p := Peer(fd, &sa); p.IsValid() {
		t.Fatalf("an unconnected socket's peer is %v", p)
	}
	if e := Connect(fd, server); e != 0 && e != unix.EINPROGRESS {
		t.Fatalf("connect: %v", e)
	}
	ready(t, fd, unix.POLLOUT, "the connect did not finish")
	if e := SoError(fd); e != 0 {
		t.Fatalf("the connect failed: %v", e)
	}
	if p := Peer(fd, &sa); p != server {
		t.Errorf("client's peer %v, want %v", p, server)
	}
	csa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	client := netip.AddrPortFrom(lo, uint16(csa.(*unix.SockaddrInet4).Port))
	ready(t, lfd, unix.POLLIN, "nothing to accept")
	afd, from, e := Accept(lfd, &sa)
	if e != 0 {
		t.Fatalf("accept: %v", e)
	}
	defer Close(afd)
	if from != client {
		t.Errorf("accepted from %v, want %v", from, client)
	}
	if _, _, e := Accept(lfd, &sa); e != unix.EAGAIN {
		t.Errorf("a second accept: %v, want EAGAIN", e)
	}
	if e := ShutdownWrite(fd); e != 0 {
		t.Fatal(e)
	}
	ready(t, afd, unix.POLLIN, "no FIN came")
	if n, e := Read(afd, make([]byte, 1)); n != 0 || e != 0 {
		t.Errorf("read after the client's FIN: %d %v, want 0 (EOF)", n, e)
	}
}

// TestNoAllocation: the calls of a loop's hot path, and the conversions,
// allocate nothing.
func TestNoAllocation(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(fds[0])
	defer Close(fds[1])
	lo := netip.MustParseAddr("127.0.0.1")
	udp, e := Socket(lo, unix.SOCK_DGRAM, 0)
	if e != 0 {
		t.Fatal(e)
	}
	defer Close(udp)
	b := make([]byte, 64)
	var sa unix.RawSockaddrInet6
	var any unix.RawSockaddrAny
	to := netip.AddrPortFrom(lo, 0) // refused (EINVAL): nothing leaves the host
	hs := make([]unix.Mmsghdr, 1)
	var oob Cmsg
	allocs := testing.AllocsPerRun(100, func() {
		Write(fds[1], b)
		Read(fds[0], b)
		Send(fds[1], b[:1], false)
		Read(fds[0], b)
		Read(fds[0], b) // EAGAIN
		SendTo(udp, b, to, false)
		SendGSO(udp, b, 16, to, false, &oob)
		Recvmmsg(udp, hs) // EAGAIN
		RecvGRO(udp, b, &oob)
		PutSockaddr(&sa, to, true)
		_ = AddrPort(&sa)
		_ = PeerAddrPort(&any)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per round, want 0", allocs)
	}
}

// ready waits, at most 10 s, for events on fd; else the test fails with
// what (a format of args).
func ready(t *testing.T, fd int, events int16, what string, args ...any) {
	t.Helper()
	if k, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: events}}, 10_000); k != 1 || err != nil {
		t.Fatalf(what+" (poll: %d %v)", append(args, k, err)...)
	}
}
