//go:build linux

package evloop_test

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/internal/udp/udptest"
	"github.com/darkit/protoplex/protocols"
)

// datagramPrefix matches a flow whose first datagram starts with p.
func datagramPrefix(p string) protocols.DatagramFunc {
	return func(d [][]byte) protocols.Result {
		if bytes.HasPrefix(d[0], []byte(p)) {
			return protocols.Match
		}
		return protocols.NoMatch
	}
}

// twoDatagrams matches a flow whose first datagram is "A" once a second
// one starting "B" came: until then the flow is identifying.
func twoDatagrams(d [][]byte) protocols.Result {
	switch {
	case string(d[0]) != "A":
		return protocols.NoMatch
	case len(d) < 2:
		return protocols.NeedMore
	case bytes.HasPrefix(d[1], []byte("B")):
		return protocols.Match
	}
	return protocols.NoMatch
}

// dialUDP is a client of the rig's UDP listener, closed when the test ends.
func (r *rig) dialUDP() *net.UDPConn {
	r.tb.Helper()
	c, err := net.DialUDP("udp", nil, r.udpAddr)
	if err != nil {
		r.tb.Fatal(err)
	}
	r.tb.Cleanup(func() { c.Close() })
	return c
}

// roundTripUDP sends msg and returns the answer, failing after bound.
func (r *rig) roundTripUDP(c *net.UDPConn, msg string) string {
	r.tb.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		r.tb.Fatal(err)
	}
	return r.readUDP(c)
}

func udpRig(t *testing.T, protos ...*protocols.Protocol) *rig {
	return newRig(t, protos, func(s *setup) { s.udp = true })
}

// TestUDPFlowsOnLoops: a flow's datagrams go up and its replies come back
// through the loops, and a hundred flows start no goroutine: the loops
// read the listener and every upstream socket.
func TestUDPFlowsOnLoops(t *testing.T) {
	echo := udptest.Echo(t, true)
	r := udpRig(t, &protocols.Protocol{Name: "UECHO", Target: echo, Datagram: datagramPrefix("PING")})
	first := r.dialUDP()
	if got := r.roundTripUDP(first, "PING0"); got != "PING0|PING0" {
		t.Fatalf("echo %q", got)
	}
	before := runtime.NumGoroutine()
	const flows = 100
	for i := range flows {
		c := r.dialUDP()
		for j := range 3 {
			msg := fmt.Sprintf("PING%d-%d", i, j)
			if got, want := r.roundTripUDP(c, msg), fmt.Sprintf("PING%d-0|%s", i, msg); got != want {
				t.Fatalf("flow %d: %q, want %q", i, got, want)
			}
		}
	}
	if n := r.udp.Flows(); n != flows+1 {
		t.Errorf("%d flows, want %d", n, flows+1)
	}
	if after := runtime.NumGoroutine(); after-before > 5 {
		t.Errorf("goroutines grew from %d to %d with %d flows", before, after, flows)
	}
	if got := r.metric("protoplex_udp_flows_active"); got != flows+1 {
		t.Errorf("protoplex_udp_flows_active = %v, want %d", got, flows+1)
	}
	// The loop counts a reply after its sendmsg returned, so the client
	// may read the last one before it is counted.
	r.waitMetric(3*flows+1, "protoplex_udp_datagrams_total", "protocol=UECHO", "direction=backend_to_client")
}

// TestUDPAnsweredOnLoop: a route's udp_responses ends each flow at its
// answer, on the loop, and frees its socket: a new port per query leaves
// no flow behind and no descriptor.
func TestUDPAnsweredOnLoop(t *testing.T) {
	echo := udptest.Echo(t, false)
	r := udpRig(t, &protocols.Protocol{Name: "UASK", Target: echo, Datagram: datagramPrefix("q"), UDPResponses: 1})
	fds := openFDs(t)
	const queries = 200
	for i := range queries {
		c, err := net.DialUDP("udp", nil, r.udpAddr)
		if err != nil {
			t.Fatal(err)
		}
		msg := fmt.Sprintf("q%d", i)
		if got := r.roundTripUDP(c, msg); got != msg {
			t.Fatalf("query %d: %q", i, got)
		}
		c.Close()
	}
	testnet.Eventually(t, bound, func() bool { return r.udp.Flows() == 0 }, "flows = %d after every answer, want 0", r.udp.Flows())
	// A flow leaves the table before its end is counted: wait for the count.
	r.waitMetric(queries, "protoplex_udp_flows_expired_total", "reason=answered")
	if now := openFDs(t); fds >= 0 && now-fds > 8 {
		t.Errorf("open fds grew by %d after %d answered queries", now-fds, queries)
	}
}

// TestUDPIdleOnLoop: the loop's sweep ends a flow idle past its timeout.
func TestUDPIdleOnLoop(t *testing.T) {
	echo := udptest.Echo(t, false)
	r := udpRig(t, &protocols.Protocol{Name: "UECHO", Target: echo, Datagram: datagramPrefix("PING")})
	c := r.dialUDP()
	if got := r.roundTripUDP(c, "PING"); got != "PING" {
		t.Fatalf("echo %q", got)
	}
	r.udp.Sweep(time.Now()) // not idle yet
	if n := r.udp.Flows(); n != 1 {
		t.Fatalf("flows = %d before the idle timeout, want 1", n)
	}
	r.udp.Sweep(time.Now().Add(time.Hour))
	if n := r.udp.Flows(); n != 0 {
		t.Fatalf("flows = %d past the idle timeout, want 0", n)
	}
	if got := r.metric("protoplex_udp_flows_expired_total", "reason=idle"); got != 1 {
		t.Errorf("idle = %v, want 1", got)
	}
	// The client's next datagram is a new flow.
	if got := r.roundTripUDP(c, "PING2"); got != "PING2" {
		t.Fatalf("echo after idle %q", got)
	}
}

// TestUDPHostNameOnLoop: a host-name target is resolved off the loop and
// its socket handed back to it; the datagrams the flow held meanwhile go
// up in order.
func TestUDPHostNameOnLoop(t *testing.T) {
	echo := udptest.Echo(t, true)
	_, port, _ := net.SplitHostPort(echo)
	if c, err := net.Dial("udp", "localhost:"+port); err != nil || c.RemoteAddr().(*net.UDPAddr).IP.String() != "127.0.0.1" {
		t.Skipf("localhost does not resolve to 127.0.0.1 first here: %v", err)
	} else {
		c.Close()
	}
	r := udpRig(t, &protocols.Protocol{Name: "UTWO", Target: "localhost:" + port, Datagram: twoDatagrams})
	c := r.dialUDP()
	for _, m := range []string{"A", "B", "C"} {
		if _, err := c.Write([]byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for range 3 {
		got = append(got, r.readUDP(c))
	}
	if strings.Join(got, ",") != "A|A,A|B,A|C" {
		t.Fatalf("got %q, want A|A, A|B, A|C", got)
	}
}

// readUDP reads the next answer, failing after bound.
func (r *rig) readUDP(c *net.UDPConn) string {
	r.tb.Helper()
	_ = c.SetReadDeadline(time.Now().Add(bound))
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		r.tb.Fatalf("no answer: %v; log:\n%s", err, r.log)
	}
	return string(buf[:n])
}

// TestUDPEngineAfterPlaneClosed: the loops stopped under the engine (its
// listener and flows on them) still let it close: it ends its flows and
// closes their sockets itself, since nothing else runs them any more.
func TestUDPEngineAfterPlaneClosed(t *testing.T) {
	echo := udptest.Echo(t, false)
	r := udpRig(t, &protocols.Protocol{Name: "UECHO", Target: echo, Datagram: datagramPrefix("PING")})
	for i := range 5 {
		if got := r.roundTripUDP(r.dialUDP(), fmt.Sprintf("PING%d", i)); got != fmt.Sprintf("PING%d", i) {
			t.Fatalf("echo %q", got)
		}
	}
	fds := openFDs(t)
	closed := make(chan error, 1)
	go func() { r.plane.Close(); r.udp.Close(); closed <- nil }()
	if err := waitFor(closed); err != nil {
		t.Fatalf("Plane.Close, then the engine's Close: %v", err)
	}
	if n := r.udp.Flows(); n != 0 {
		t.Errorf("%d flows after Close", n)
	}
	if got := r.metric("protoplex_udp_flows_active"); got != 0 {
		t.Errorf("protoplex_udp_flows_active = %v after Close", got)
	}
	// Closed: the 5 flows' sockets, the 2 listening sockets and their 2
	// duplicates, each of the 2 loops' epoll and eventfd.
	if now := openFDs(t); fds >= 0 && fds-now < 5+2+2+4 {
		t.Errorf("%d fds closed by Close (%d before, %d after), want at least 13", fds-now, fds, now)
	}
}

// TestUDPDualStackOnLoop: a socket bound to [::] takes IPv4 clients
// (mapped) and IPv6 ones; each flow's replies go back to its own client.
func TestUDPDualStackOnLoop(t *testing.T) {
	if c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	} else {
		c.Close()
	}
	echo := udptest.Echo(t, true)
	r := newRig(t, []*protocols.Protocol{{Name: "UECHO", Target: echo, Datagram: datagramPrefix("PING")}},
		func(s *setup) { s.udp, s.udpListen = true, "[::]:0" })
	for _, host := range []string{"127.0.0.1", "::1"} {
		c, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.ParseIP(host), Port: r.udpAddr.Port})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		for _, m := range []string{"PING-" + host, "PING-again"} {
			if got, want := r.roundTripUDP(c, m), "PING-"+host+"|"+m; got != want {
				t.Fatalf("from %s: %q, want %q", host, got, want)
			}
		}
	}
}

// silentUDP is a UDP server on 127.0.0.1 that never answers, so the flows
// to it stay routed.
func silentUDP(t *testing.T) *net.UDPAddr {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.LocalAddr().(*net.UDPAddr)
}

// peerSockopt is the option level/opt of this process's socket connected
// to peer (a flow's upstream socket), or -1 while there is none.
func peerSockopt(t *testing.T, peer *net.UDPAddr, level, opt int) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		sa, err := unix.Getpeername(fd)
		if a, ok := sa.(*unix.SockaddrInet4); err != nil || !ok || a.Port != peer.Port {
			continue
		}
		if v, err := unix.GetsockoptInt(fd, level, opt); err == nil {
			return v
		}
	}
	return -1
}

// TestUDPFlowBuffersOnLoop: on the loops, a long-lived flow's upstream
// socket (no udp_responses) gets the larger receive buffer and UDP_GRO, a
// DNS-like flow's (udp_responses 1) keeps the kernel's defaults.
func TestUDPFlowBuffersOnLoop(t *testing.T) {
	probe, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	def := rcvbufOf(t, probe)
	probe.Close()
	if b, err := os.ReadFile("/proc/sys/net/core/rmem_max"); err != nil {
		t.Skipf("no net.core.rmem_max: %v", err)
	} else if max, _ := strconv.Atoi(strings.TrimSpace(string(b))); 2*max <= def {
		t.Skipf("net.core.rmem_max %d allows no buffer above the default %d", max, def)
	}
	long, ask := silentUDP(t), silentUDP(t)
	r := udpRig(t,
		&protocols.Protocol{Name: "ULONG", Target: long.String(), Datagram: datagramPrefix("L")},
		&protocols.Protocol{Name: "UASK", Target: ask.String(), Datagram: datagramPrefix("q"), UDPResponses: 1})
	for _, msg := range []string{"L1", "q1"} {
		if _, err := r.dialUDP().Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	var gotLong, gotAsk int
	testnet.Eventually(t, bound, func() bool {
		gotLong, gotAsk = peerSockopt(t, long, unix.SOL_SOCKET, unix.SO_RCVBUF), peerSockopt(t, ask, unix.SOL_SOCKET, unix.SO_RCVBUF)
		return gotLong >= 0 && gotAsk >= 0
	}, "no upstream sockets")
	if gotLong <= def {
		t.Errorf("a long-lived flow's upstream SO_RCVBUF = %d, not above the default %d (net.core.rmem_max allowing)", gotLong, def)
	}
	if gotAsk != def {
		t.Errorf("a DNS-like flow's upstream SO_RCVBUF = %d, want the default %d", gotAsk, def)
	}
	if gro := peerSockopt(t, long, unix.SOL_UDP, unix.UDP_GRO); gro != 1 {
		t.Errorf("a long-lived flow's upstream UDP_GRO = %d, want 1", gro)
	}
	if gro := peerSockopt(t, ask, unix.SOL_UDP, unix.UDP_GRO); gro != 0 {
		t.Errorf("a DNS-like flow's upstream UDP_GRO = %d, want 0", gro)
	}
}

// TestUDPTrainOnLoop: a backend's GSO train (one sendmsg with
// UDP_SEGMENT, as a QUIC server sends its bursts), read whole by the
// flow's UDP_GRO socket, reaches the client as the same datagrams, in
// order, each counted.
func TestUDPTrainOnLoop(t *testing.T) {
	backend := trainBackend(t)
	r := udpRig(t, &protocols.Protocol{Name: "UTRAIN", Target: backend.LocalAddr().String(), Datagram: datagramPrefix("T")})
	c := r.dialUDP()
	up := backend.flow(t, c)
	backend.train(t, up, c)
	r.waitMetric(trainLen, "protoplex_udp_datagrams_total", "protocol=UTRAIN", "direction=backend_to_client")
}

// trainSender is a backend that answers with trains.
type trainSender struct{ *net.UDPConn }

func trainBackend(t *testing.T) trainSender {
	t.Helper()
	backend, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { backend.Close() })
	return trainSender{backend}
}

// flow starts c's flow with a datagram "T" and returns the address of
// its upstream socket, as the backend sees it.
func (b trainSender) flow(t *testing.T, c *net.UDPConn) netip.AddrPort {
	t.Helper()
	if _, err := c.Write([]byte("T")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	_ = b.SetReadDeadline(time.Now().Add(bound))
	_, up, err := b.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	return up
}

// The train: 11 datagrams of 1200 bytes and one of 43, each filled with
// its index.
const trainSeg, trainFull, trainLast, trainLen = 1200, 11, 43, 12

// train sends the train to up in one sendmsg (UDP_SEGMENT) and checks
// that c gets its datagrams, one by one.
func (b trainSender) train(t *testing.T, up netip.AddrPort, c *net.UDPConn) {
	t.Helper()
	const seg, full, last = trainSeg, trainFull, trainLast
	buf := make([]byte, 64<<10)
	var train []byte
	for i := range full + 1 {
		n := seg
		if i == full {
			n = last
		}
		train = append(train, bytes.Repeat([]byte{byte('a' + i)}, n)...)
	}
	oob := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	*(*uint16)(unsafe.Pointer(&oob[unix.CmsgLen(0)])) = seg
	if _, _, err := b.WriteMsgUDPAddrPort(train, oob, up); err != nil {
		t.Skipf("the kernel sends no UDP_SEGMENT train: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(bound))
	for i := range full + 1 {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		want := seg
		if i == full {
			want = last
		}
		if n != want || buf[0] != byte('a'+i) || buf[n-1] != byte('a'+i) {
			t.Fatalf("datagram %d: %d bytes %q…%q, want %d of %q", i, n, buf[0], buf[n-1], want, byte('a'+i))
		}
	}
}

// rcvbufOf is SO_RCVBUF of c.
func rcvbufOf(t *testing.T, c *net.UDPConn) int {
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	v := -1
	_ = rc.Control(func(fd uintptr) { v, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF) })
	return v
}
