//go:build linux

package evloop_test

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/internal/udp/udptest"
	"github.com/darkit/protoplex/protocols"
)

// dnsBackend is a DNS server the test drives by hand: it reads each query
// and answers (or does not) as the test says.
type dnsBackend struct {
	t *testing.T
	c *net.UDPConn
}

func newDNSBackend(t *testing.T) *dnsBackend {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &dnsBackend{t: t, c: c}
}

func (b *dnsBackend) addr() string { return b.c.LocalAddr().String() }

// query reads the next query: its ID and the upstream socket it came from.
func (b *dnsBackend) query() (uint16, netip.AddrPort) {
	b.t.Helper()
	_ = b.c.SetReadDeadline(time.Now().Add(bound))
	buf := make([]byte, 2048)
	n, from, err := b.c.ReadFromUDPAddrPort(buf)
	if err != nil || n < 12 {
		b.t.Fatalf("no query at the backend: %v", err)
	}
	return binary.BigEndian.Uint16(buf), from
}

func (b *dnsBackend) send(to netip.AddrPort, msg []byte) {
	b.t.Helper()
	if _, err := b.c.WriteToUDPAddrPort(msg, to); err != nil {
		b.t.Fatal(err)
	}
}

// replyID is the ID of the DNS message a client reads next.
func (r *rig) replyID(c *net.UDPConn) uint16 {
	r.tb.Helper()
	return binary.BigEndian.Uint16([]byte(r.readUDP(c)))
}

// TestUDPPooledSocketNeverMisdelivers: an answered DNS flow's upstream
// socket goes to a later flow of another client, and no late or duplicate
// reply meant for the earlier flow reaches the later one: one that comes
// while the socket waits in the pool is dropped (idle_socket), one that
// comes after the next flow took it is dropped by that flow's query guard
// (stale_reply), sent before the genuine answer so that without the guard
// the client would read it first.
func TestUDPPooledSocketNeverMisdelivers(t *testing.T) {
	b := newDNSBackend(t)
	r := udpRig(t, protocols.NewDNSProtocol(b.addr()))
	last := map[netip.AddrPort]uint16{} // upstream socket → the ID it answered last
	idleChecked, reused := false, 0
	for i := range 40 {
		id, name := uint16(100+i), fmt.Sprintf("q%d.test", i)
		c := r.dialUDP()
		if _, err := c.Write(udptest.DNS(id, name, false)); err != nil {
			t.Fatal(err)
		}
		got, up := b.query()
		if got != id {
			t.Fatalf("backend got ID %d, want %d", got, id)
		}
		if prev, ok := last[up]; ok {
			reused++
			// The earlier flow's answer, once more: a late duplicate.
			b.send(up, udptest.DNS(prev, fmt.Sprintf("q%d.test", prev-100), true))
		}
		b.send(up, udptest.DNS(id, name, true))
		if got := r.replyID(c); got != id {
			t.Fatalf("client %d read the reply of ID %d, want %d", i, got, id)
		}
		last[up] = id
		pooled := float64(len(last))
		testnet.Eventually(t, bound, func() bool { return r.metric("protoplex_udp_pooled_sockets") == pooled },
			"pooled sockets %v, want %v", testnet.Later(func() string { return fmt.Sprint(r.metric("protoplex_udp_pooled_sockets")) }), pooled)
		if !idleChecked {
			// A duplicate while the socket waits in the pool.
			b.send(up, udptest.DNS(id, name, true))
			testnet.Eventually(t, bound, func() bool { return r.metric("protoplex_udp_dropped_total", "reason=idle_socket") == 1 },
				"idle_socket drops %v, want 1", testnet.Later(func() string { return fmt.Sprint(r.metric("protoplex_udp_dropped_total", "reason=idle_socket")) }))
			idleChecked = true
		}
		if reused >= 5 {
			break
		}
	}
	if reused < 5 {
		t.Fatalf("%d of the flows took a pooled socket, want 5 (sockets seen: %d)", reused, len(last))
	}
	if got := r.metric("protoplex_udp_dropped_total", "reason=stale_reply"); got != float64(reused) {
		t.Errorf("stale_reply drops %v, want %d", got, reused)
	}
	if n := r.udp.Flows(); n != 0 {
		t.Errorf("%d flows after every answer, want 0", n)
	}
}

// TestUDPPoolHoldsFewSockets: the resolver pattern (a new source port per
// query, a few at once) keeps the descriptors bounded through the pool;
// a reload closes every pooled socket at the next sweep, and so does
// closing the engine: nothing leaks.
func TestUDPPoolHoldsFewSockets(t *testing.T) {
	echo := udptest.Echo(t, false) // a DNS query echoed is its own answer: same ID, same question
	r := udpRig(t, protocols.NewDNSProtocol(echo))
	runtime.GC()
	before := openFDs(t)
	const workers, each = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 512)
			for i := range each {
				c, err := net.DialUDP("udp", nil, r.udpAddr)
				if err != nil {
					errs <- err
					return
				}
				id := uint16(w*each + i)
				q := udptest.DNS(id, fmt.Sprintf("w%d-%d.test", w, i), false)
				_, _ = c.Write(q)
				_ = c.SetReadDeadline(time.Now().Add(bound))
				n, err := c.Read(buf)
				c.Close()
				if err != nil || string(buf[:n]) != string(q) {
					errs <- fmt.Errorf("query %d: %q, %v", id, buf[:n], err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	testnet.Eventually(t, bound, func() bool { return r.udp.Flows() == 0 }, "flows = %d after every answer, want 0", r.udp.Flows())
	// A flow leaves the table before its end is counted: wait for the count (and its socket pooled).
	r.waitMetric(workers*each, "protoplex_udp_flows_expired_total", "reason=answered")
	pooled := r.metric("protoplex_udp_pooled_sockets")
	if pooled < 1 || pooled > 2*workers {
		t.Errorf("%v sockets pooled after %d queries %d at once, want 1 to %d", pooled, workers*each, workers, 2*workers)
	}
	if now := openFDs(t); now-before > int(pooled)+4 {
		t.Errorf("open fds grew by %d with %v sockets pooled:\n%s", now-before, pooled, strings.Join(fdTable(t), "\n"))
	}
	for _, why := range []string{"stale_reply", "idle_socket", "unchecked_query"} {
		if got := r.metric("protoplex_udp_dropped_total", "reason="+why); got != 0 {
			t.Errorf("%s drops %v, want 0", why, got)
		}
	}

	// A reload (the same target) empties the pools at the next sweep.
	r.reloadUDP(protocols.NewDNSProtocol(echo))
	r.udp.Sweep(time.Now())
	testnet.Eventually(t, bound, func() bool { return r.metric("protoplex_udp_pooled_sockets") == 0 },
		"%v sockets pooled after a reload", testnet.Later(func() string { return fmt.Sprint(r.metric("protoplex_udp_pooled_sockets")) }))
	if now := openFDs(t); now > before+2 {
		t.Errorf("open fds %d after the reload emptied the pool, %d before the queries:\n%s", now, before, strings.Join(fdTable(t), "\n"))
	}

	// The new table's flows pool again, and closing the engine closes them.
	c := r.dialUDP()
	q := udptest.DNS(1, "again.test", false)
	if got := r.roundTripUDP(c, string(q)); got != string(q) {
		t.Fatalf("after the reload: %q", got)
	}
	testnet.Eventually(t, bound, func() bool { return r.metric("protoplex_udp_pooled_sockets") == 1 }, "no socket pooled after the reload")
	r.udp.Close()
	if got := r.metric("protoplex_udp_pooled_sockets"); got != 0 {
		t.Errorf("%v sockets pooled after Close", got)
	}
	if now := openFDs(t); now > before-2 { // the listeners' sockets and their loops' duplicates are gone too
		t.Errorf("open fds %d after Close, %d with the listeners open:\n%s", now, before, strings.Join(fdTable(t), "\n"))
	}
}

// TestUDPOnlyAnsweredSocketsPooled: a flow that ends any other way than
// answered (here idle: its query got no answer) closes its socket instead
// of pooling it; a datagram that is no DNS query, on a DNS flow that
// reuses sockets, does not go up (the guard could not tie a reply to it).
func TestUDPOnlyAnsweredSocketsPooled(t *testing.T) {
	b := newDNSBackend(t)
	r := udpRig(t, protocols.NewDNSProtocol(b.addr()))
	runtime.GC()
	before := openFDs(t)
	c := r.dialUDP()
	if _, err := c.Write(udptest.DNS(1, "silent.test", false)); err != nil {
		t.Fatal(err)
	}
	if id, _ := b.query(); id != 1 {
		t.Fatalf("backend got ID %d", id)
	}
	if _, err := c.Write([]byte("not a DNS query at all")); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, bound, func() bool { return r.metric("protoplex_udp_dropped_total", "reason=unchecked_query") == 1 },
		"unchecked_query drops %v, want 1", testnet.Later(func() string { return fmt.Sprint(r.metric("protoplex_udp_dropped_total", "reason=unchecked_query")) }))
	r.udp.Sweep(time.Now().Add(time.Hour)) // the flow is idle past its timeout
	if n := r.udp.Flows(); n != 0 {
		t.Fatalf("%d flows after the idle timeout", n)
	}
	if got := r.metric("protoplex_udp_pooled_sockets"); got != 0 {
		t.Errorf("%v sockets pooled after an unanswered flow", got)
	}
	if now := openFDs(t); now > before+1 { // the client's socket
		t.Errorf("open fds %d after the flow ended, %d before:\n%s", now, before, strings.Join(fdTable(t), "\n"))
	}
	// The garbage never reached the backend: the next thing it reads is
	// the next flow's query.
	if _, err := c.Write(udptest.DNS(2, "next.test", false)); err != nil {
		t.Fatal(err)
	}
	if id, _ := b.query(); id != 2 {
		t.Fatalf("backend got ID %d, want the next query's 2", id)
	}
}

// TestUDPPoolClosedAtMove: pooled sockets do not move on an upgrade: the
// old engine closes them when it pauses its listeners, and the new one
// answers the next query through a socket of its own.
func TestUDPPoolClosedAtMove(t *testing.T) {
	echo := udptest.Echo(t, false)
	protos := []*protocols.Protocol{protocols.NewDNSProtocol(echo)}
	ro, rn, old, next, addr := movePair(t, protos, false)
	c, err := net.DialUDP("udp", nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	q := udptest.DNS(1, "before.test", false)
	if got := roundTrip(t, ro, c, string(q)); got != string(q) {
		t.Fatalf("before the move: %q", got)
	}
	testnet.Eventually(t, bound, func() bool { return ro.metric("protoplex_udp_pooled_sockets") == 1 && old.e.Flows() == 0 },
		"the answered flow's socket is not pooled in the old engine")
	if moved := moveFlows(t, old, next, adoptAll, func() {}); moved != 0 {
		t.Fatalf("%d flows moved, want none (the pool's sockets are no flows)", moved)
	}
	if got := ro.metric("protoplex_udp_pooled_sockets"); got != 0 {
		t.Errorf("the old engine holds %v pooled sockets after the move", got)
	}
	q = udptest.DNS(2, "after.test", false)
	if got := roundTrip(t, rn, c, string(q)); got != string(q) {
		t.Fatalf("after the move: %q", got)
	}
}
