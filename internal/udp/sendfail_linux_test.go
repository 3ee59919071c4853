//go:build linux

package udp

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/darkit/protoplex/internal/metrics"
	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/internal/udp/udptest"
)

// A datagram the kernel refuses to send (a firewall's EPERM, ENOBUFS, a
// destination it rejects) is lost, and counted in
// protoplex_udp_dropped_total: send_failed for a reply to a client,
// upstream_send_failed for a datagram to a backend. The refusals below
// are real ones: a port-0 destination (EINVAL), and an upstream socket
// shut down for writing (EPIPE).

// clientOf is the flow's key for c: its address as the listener sees it.
func clientOf(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

// shutWrite shuts s down for writing: every later send on it fails
// (EPIPE), as a kernel that refuses them would.
func shutWrite(s syscall.Conn) error {
	rc, err := s.SyscallConn()
	if err != nil {
		return err
	}
	if err := rc.Control(func(fd uintptr) { err = unix.Shutdown(int(fd), unix.SHUT_WR) }); err != nil {
		return err
	}
	return err
}

// TestRefusedReplyInBatchCounted (event loop): three replies wait in one
// send batch, the middle one's destination turned to port 0 (EINVAL, as
// TestMmsgThroughTheKernel): the other two reach their clients and are
// counted sent, the refused one is counted send_failed.
func TestRefusedReplyInBatchCounted(t *testing.T) {
	e, lp, c1, st, _ := stepEngine(t, 0, Settings{})
	ln := e.lns[0]
	clients := []*net.UDPConn{c1, dial(t, c1.RemoteAddr().(*net.UDPAddr)), dial(t, c1.RemoteAddr().(*net.UDPAddr))}
	for _, c := range clients {
		if _, err := c.Write([]byte("q1")); err != nil {
			t.Fatal(err)
		}
	}
	testnet.Eventually(t, 10*time.Second, func() bool { lp.round(false); return ln.drv.tx.n == 3 },
		"%v replies in the send batch, want 3", testnet.Later(func() string { return fmt.Sprint(ln.drv.tx.n) }))
	lost := ln.drv.tx.flows[1].client
	ln.drv.tx.names[1].Port = 0 // the destination the kernel refuses, mid-batch
	lp.round(true)

	if got := value(t, st.Dropped(metrics.UDPSendFailed)); got != 1 {
		t.Errorf("send_failed = %v, want 1", got)
	}
	if got := value(t, st.Route("A").DatagramsDn); got != 2 {
		t.Errorf("%v replies counted sent, want 2", got)
	}
	for _, c := range clients {
		if clientOf(c) == lost {
			if !nothingWaits(t, c) {
				t.Errorf("the client whose reply was refused got one")
			}
			continue
		}
		if got := read(t, c); got != "q1" {
			t.Errorf("reply %q, want q1", got)
		}
	}
	if got := value(t, st.Dropped(metrics.UDPUpstreamSendFailed)); got != 0 {
		t.Errorf("upstream_send_failed = %v, want 0", got)
	}
}

// TestRefusedTrainCounted (event loop): a train of replies (a GRO read)
// to a destination the kernel refuses is counted send_failed once per
// datagram, whether sent as one train or cut by hand; sent, it is counted
// once per datagram, and the client gets each.
func TestRefusedTrainCounted(t *testing.T) {
	e, lp, c, st, _ := stepEngine(t, 0, Settings{})
	ln := e.lns[0]
	if _, err := c.Write([]byte("q1")); err != nil {
		t.Fatal(err)
	}
	down := func() float64 { return value(t, st.Route("A").DatagramsDn) }
	testnet.Eventually(t, 10*time.Second, func() bool { lp.round(true); return down() == 1 }, "the first reply")
	if got := read(t, c); got != "q1" {
		t.Fatalf("reply %q", got)
	}
	f := ln.t.lookup(clientOf(c))
	if f == nil {
		t.Fatal("no flow for the client")
	}
	train := bytes.Repeat([]byte("t"), 2500)
	for i, noGSO := range []bool{false, true} {
		ln.drv.noGSO = noGSO
		good := f.client
		f.client = netip.AddrPortFrom(good.Addr(), 0)
		ln.sendLoop(f, train, 1000)
		f.client = good
		if got, want := value(t, st.Dropped(metrics.UDPSendFailed)), float64(3*(i+1)); got != want {
			t.Fatalf("noGSO %v: send_failed = %v after a refused train of 3, want %v", noGSO, got, want)
		}
	}
	ln.drv.noGSO = false
	ln.sendLoop(f, train, 1000)
	if got := down(); got != 4 {
		t.Errorf("%v datagrams counted sent, want 1 + 3", got)
	}
	for _, want := range []int{1000, 1000, 500} {
		if got := read(t, c); len(got) != want {
			t.Errorf("a datagram of the train is %d bytes, want %d", len(got), want)
		}
	}
}

// TestRefusedUpstreamCounted (event loop): datagrams a flow's upstream
// socket refuses are counted upstream_send_failed, one write or a
// sendmmsg batch of them, and not counted sent.
func TestRefusedUpstreamCounted(t *testing.T) {
	e, lp, c, st, _ := stepEngine(t, 0, Settings{})
	ln := e.lns[0]
	failed := func() float64 { return value(t, st.Dropped(metrics.UDPUpstreamSendFailed)) }
	if _, err := c.Write([]byte("q1")); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { lp.round(true); return value(t, st.Route("A").DatagramsDn) == 1 }, "the first reply")
	f := ln.t.lookup(clientOf(c))
	if f == nil {
		t.Fatal("no flow for the client")
	}
	up := f.up.(*rawUp)
	if err := unix.Shutdown(int(up.fd), unix.SHUT_WR); err != nil {
		t.Fatal(err)
	}
	// From the client: one datagram of a read goes up with one write.
	if _, err := c.Write([]byte("q2")); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { lp.round(true); return failed() == 1 },
		"upstream_send_failed = %v, want 1", testnet.Later(func() string { return fmt.Sprint(failed()) }))
	// A run of a read's datagrams goes up in one sendmmsg: each refused.
	ln.drv.reading = true
	ln.queueUp(f, []byte("q3"))
	ln.queueUp(f, []byte("q4"))
	ln.drv.reading = false
	ln.flushUp()
	if got := failed(); got != 3 {
		t.Errorf("upstream_send_failed = %v after a refused batch of 2, want 3", got)
	}
	if got := value(t, st.Route("A").DatagramsUp); got != 1 {
		t.Errorf("%v datagrams counted up, want 1", got)
	}
	if got := value(t, st.Dropped(metrics.UDPSendFailed)); got != 0 {
		t.Errorf("send_failed = %v, want 0", got)
	}
}

// TestRefusedCountedOnGoroutines: the goroutine engine counts the same
// refusals: a reply to a port-0 destination (send_failed), and a datagram
// its flow's upstream socket refuses (upstream_send_failed).
func TestRefusedCountedOnGoroutines(t *testing.T) {
	fx := start(t, []Route{{Name: "A", Label: "A", Detect: prefix("q"), Targets: []string{udptest.Echo(t, false)}}}, Settings{})
	c := dial(t, fx.addr)
	if got := roundTrip(t, c, "q1"); got != "q1" {
		t.Fatalf("reply %q", got)
	}
	ln, rs := fx.ln, fx.e.table().Routes()[0].state
	// A reply, on the flow's owner as the reply reader would send it, to
	// a destination the kernel refuses.
	ln.call(func() {
		ln.reply(&flow{client: netip.MustParseAddrPort("127.0.0.1:0"), heard: true, rs: rs}, []byte("r"), 0)
	})
	if got := value(t, fx.stats.Dropped(metrics.UDPSendFailed)); got != 1 {
		t.Errorf("send_failed = %v, want 1", got)
	}
	// The first reply is counted by its reader after the client may have
	// read it: wait for it, bounded.
	down := func() float64 { return value(t, fx.stats.Route("A").DatagramsDn) }
	testnet.Eventually(t, 10*time.Second, func() bool { return down() == 1 },
		"%v replies counted sent, want 1", testnet.Later(func() string { return fmt.Sprint(down()) }))
	err := errors.New("no flow for the client")
	ln.call(func() {
		if f := ln.t.lookup(clientOf(c)); f != nil {
			err = shutWrite(f.up)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("q2")); err != nil {
		t.Fatal(err)
	}
	failed := func() float64 { return value(t, fx.stats.Dropped(metrics.UDPUpstreamSendFailed)) }
	testnet.Eventually(t, 10*time.Second, func() bool { return failed() == 1 },
		"upstream_send_failed = %v, want 1", testnet.Later(func() string { return fmt.Sprint(failed()) }))
	if got := value(t, fx.stats.Route("A").DatagramsUp); got != 1 {
		t.Errorf("%v datagrams counted up, want 1", got)
	}
}

// TestClosedUpstreamRefusesIO: a closed upstream socket's number may be
// another socket's by now; Read and Write on it go nowhere near the
// kernel. Here the number is reused at once by a socket connected to a
// listener, which must receive nothing.
func TestClosedUpstreamRefusesIO(t *testing.T) {
	victim, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	up := &rawUp{fd: int32(fd), closed: true} // as Close leaves it
	unix.Close(fd)
	reused, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(reused)
	if reused != fd {
		t.Skipf("descriptor %d was not reused (got %d): nothing to show", fd, reused)
	}
	va := victim.LocalAddr().(*net.UDPAddr)
	if err := unix.Connect(reused, &unix.SockaddrInet4{Port: va.Port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := up.Write([]byte("for another flow's backend")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write on a closed upstream socket: %v, want net.ErrClosed", err)
	}
	if _, err := up.Read(make([]byte, 64)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read on a closed upstream socket: %v, want net.ErrClosed", err)
	}
	// The reused socket still works: a datagram of its own arrives, and
	// it is the only one.
	if _, err := unix.Write(reused, []byte("own")); err != nil {
		t.Fatal(err)
	}
	_ = victim.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, err := victim.Read(buf)
	if err != nil || string(buf[:n]) != "own" {
		t.Fatalf("the listener got %q, %v; want only \"own\"", buf[:n], err)
	}
}
