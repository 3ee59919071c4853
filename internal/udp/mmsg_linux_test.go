//go:build linux

package udp

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/darkit/protoplex/internal/rawsys"
)

func testRx(t *testing.T) *rxBatch { return made(t, newRxBatch) }

func testTx(t *testing.T) *txBatch { return made(t, newTxBatch) }

// made is a batch mk made, freed when the test ends.
func made[B interface{ free() }](t *testing.T, mk func() (B, error)) B {
	t.Helper()
	b, err := mk()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.free)
	return b
}

// TestRxBatchMsg: a read's datagrams come out of their slots with the
// sources the kernel wrote, IPv4-mapped ones unmapped; a read without
// names, or a family other than IPv4 and IPv6, gives no source.
func TestRxBatchMsg(t *testing.T) {
	b := testRx(t)
	hs := b.prepare(4, true)
	if len(hs) != 4 {
		t.Fatalf("%d headers, want 4", len(hs))
	}
	for i := range hs {
		if hs[i].Hdr.Name == nil || hs[i].Hdr.Namelen != unix.SizeofSockaddrInet6 || hs[i].Hdr.Iovlen != 1 {
			t.Fatalf("header %d not ready for a read: %+v", i, hs[i].Hdr)
		}
	}
	srcs := []netip.AddrPort{
		netip.MustParseAddrPort("127.0.0.1:53"),
		netip.MustParseAddrPort("[::1]:5353"),
		netip.MustParseAddrPort("[::ffff:10.1.2.3]:9"),
	}
	// What the kernel would write: payload, length, source.
	for i, src := range srcs {
		payload := fmt.Sprintf("datagram %d", i)
		copy(b.buf[i*maxDatagram:], payload)
		hs[i].Len = uint32(len(payload))
		hs[i].Hdr.Namelen = uint32(rawsys.PutSockaddr(&b.names[i], src, i > 0))
	}
	copy(b.buf[3*maxDatagram:], "x")
	hs[3].Len, b.names[3].Family = 1, unix.AF_UNIX
	want := []netip.AddrPort{srcs[0], srcs[1], netip.MustParseAddrPort("10.1.2.3:9"), {}}
	for i := range 4 {
		d, from := b.msg(i)
		if i < 3 && string(d) != fmt.Sprintf("datagram %d", i) {
			t.Errorf("datagram %d: %q", i, d)
		}
		if from != want[i] {
			t.Errorf("datagram %d from %v, want %v", i, from, want[i])
		}
	}
	// An upstream socket's read: connected, no names.
	hs = b.prepare(2, false)
	hs[0].Len = 3
	if d, from := b.msg(0); len(d) != 3 || from.IsValid() {
		t.Errorf("a read without names: %d bytes from %v", len(d), from)
	}
	if hs[1].Hdr.Name != nil || hs[1].Hdr.Namelen != 0 {
		t.Errorf("a read without names asks for one: %+v", hs[1].Hdr)
	}
}

// TestTxBatchAdd: a reply is copied in (the read buffer it came from is
// reused at once), with its destination in the family of the socket; the
// batch refuses a reply past sendBatch messages or past its arena, and an
// emptied batch takes the largest datagram.
func TestTxBatchAdd(t *testing.T) {
	tb := testTx(t)
	f := &flow{}
	src := []byte("reply")
	if !tb.add(src, netip.MustParseAddrPort("127.0.0.1:4000"), false, f) {
		t.Fatal("an empty batch refused a reply")
	}
	copy(src, "XXXXX")
	if got := unsafe.Slice(tb.iovs[0].Base, tb.iovs[0].Len); string(got) != "reply" {
		t.Fatalf("queued %q, want a copy of the reply", got)
	}
	if tb.hdrs[0].Hdr.Namelen != unix.SizeofSockaddrInet4 || rawsys.AddrPort(&tb.names[0]) != netip.MustParseAddrPort("127.0.0.1:4000") {
		t.Fatalf("destination %v (%d bytes)", rawsys.AddrPort(&tb.names[0]), tb.hdrs[0].Hdr.Namelen)
	}
	if !tb.add([]byte("v6"), netip.MustParseAddrPort("127.0.0.1:4001"), true, f) || tb.hdrs[1].Hdr.Namelen != unix.SizeofSockaddrInet6 ||
		tb.names[1].Family != unix.AF_INET6 || rawsys.AddrPort(&tb.names[1]) != netip.MustParseAddrPort("127.0.0.1:4001") {
		t.Fatalf("an IPv4 client from an IPv6 socket: %+v", tb.names[1])
	}
	for tb.n < sendBatch {
		if !tb.add([]byte("q"), netip.MustParseAddrPort("127.0.0.1:4002"), false, f) {
			t.Fatalf("refused at %d of %d messages", tb.n, sendBatch)
		}
	}
	if tb.add([]byte("q"), netip.MustParseAddrPort("127.0.0.1:4002"), false, f) {
		t.Fatal("a full batch took one more")
	}
	tb.reset()
	if tb.n != 0 || tb.used != 0 || tb.flows[0] != nil || tb.flows[sendBatch-1] != nil {
		t.Fatal("reset left messages or flows")
	}
	big := make([]byte, maxDatagram)
	for i := 0; ; i++ {
		if !tb.add(big, netip.MustParseAddrPort("127.0.0.1:4003"), false, f) {
			if want := sendArena / maxDatagram; i != want {
				t.Fatalf("%d datagrams of %d bytes fit, want %d", i, maxDatagram, want)
			}
			break
		}
	}
	tb.reset()
	if !tb.add(big, netip.MustParseAddrPort("127.0.0.1:4003"), false, f) {
		t.Fatal("an empty batch refused the largest datagram")
	}
}

// TestSendEach: messages go in order; a partial send goes on from the
// first one not sent; a message the kernel refuses is lost alone, the
// rest still go; a call that reports nothing sent and no error cannot
// spin.
func TestSendEach(t *testing.T) {
	cases := []struct {
		name  string
		n     int
		bad   map[int]bool // messages the "kernel" refuses
		chunk int          // at most this many per call (0: all it can)
		want  string
	}{
		{name: "all at once", n: 5, want: "+0 +1 +2 +3 +4"},
		{name: "partial", n: 5, chunk: 2, want: "+0 +1 +2 +3 +4"},
		{name: "a refusal mid-batch", n: 5, bad: map[int]bool{2: true}, want: "+0 +1 -2 +3 +4"},
		{name: "first and last refused", n: 4, bad: map[int]bool{0: true, 3: true}, want: "-0 +1 +2 -3"},
		{name: "every one refused", n: 3, bad: map[int]bool{0: true, 1: true, 2: true}, want: "-0 -1 -2"},
		{name: "none", n: 0, want: ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			calls := 0
			sendEach(c.n, func(i int) (int, syscall.Errno) {
				calls++
				if calls > 2*c.n+1 {
					t.Fatalf("%d calls for %d messages", calls, c.n)
				}
				// sendmmsg: the messages up to the first refused one; that
				// one's error only when it is the first of the call.
				k := 0
				for j := i; j < c.n && !c.bad[j] && (c.chunk == 0 || k < c.chunk); j++ {
					k++
				}
				if k == 0 {
					return -1, unix.EINVAL
				}
				return k, 0
			}, func(i int, ok bool) {
				s := "-"
				if ok {
					s = "+"
				}
				got = append(got, fmt.Sprint(s, i))
			})
			if g := fmt.Sprint(got); g != "["+c.want+"]" {
				t.Errorf("got %s, want [%s]", g, c.want)
			}
		})
	}
	calls := 0
	sendEach(2, func(int) (int, syscall.Errno) { calls++; return 0, 0 }, func(int, bool) {})
	if calls != 2 {
		t.Errorf("%d calls when nothing is reported sent, want 2", calls)
	}
}

// TestMmsgThroughTheKernel: one sendmmsg from one socket reaches two
// receivers, a message the kernel refuses (port 0: EINVAL, nothing sent)
// in between is lost alone, and one recvmmsg reads a receiver's datagrams
// with their source.
func TestMmsgThroughTheKernel(t *testing.T) {
	listen := func() (*net.UDPConn, netip.AddrPort) {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, c.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	a, aAddr := listen()
	bConn, bAddr := listen()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}

	tb := testTx(t)
	f := &flow{}
	msgs := []struct {
		to netip.AddrPort
		b  string
	}{{aAddr, "a1"}, {bAddr, "b1"}, {netip.AddrPortFrom(aAddr.Addr(), 0), "lost"}, {aAddr, "a2"}, {bAddr, "b2"}}
	for _, m := range msgs {
		tb.add([]byte(m.b), m.to, false, f)
	}
	var got []string
	sendEach(tb.n, func(i int) (int, syscall.Errno) { return rawsys.Sendmmsg(fd, tb.hdrs[i:tb.n]) }, func(i int, ok bool) {
		got = append(got, fmt.Sprint(i, ok))
	})
	if g := fmt.Sprint(got); g != "[0 true 1 true 2 false 3 true 4 true]" {
		t.Fatalf("sent %s", g)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	sender := netip.AddrPortFrom(netip.AddrFrom4(sa.(*unix.SockaddrInet4).Addr), uint16(sa.(*unix.SockaddrInet4).Port))

	for _, r := range []struct {
		c    *net.UDPConn
		want string
	}{{a, "a1 a2"}, {bConn, "b1 b2"}} {
		rc, err := r.c.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		rb := testRx(t)
		var seen [][]byte
		_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for len(seen) < 2 {
			var n int
			var e syscall.Errno
			err := rc.Read(func(s uintptr) bool {
				n, e = rawsys.Recvmmsg(int(s), rb.prepare(recvBatch, true))
				return e != unix.EAGAIN
			})
			if err != nil || e != 0 {
				t.Fatalf("recvmmsg: %v %v, after %q", err, e, seen)
			}
			for i := range n {
				d, from := rb.msg(i)
				if from != sender {
					t.Errorf("datagram %q from %v, want %v", d, from, sender)
				}
				seen = append(seen, bytes.Clone(d))
			}
		}
		if g := string(bytes.Join(seen, []byte(" "))); g != r.want {
			t.Errorf("receiver got %q, want %q", g, r.want)
		}
	}
}
