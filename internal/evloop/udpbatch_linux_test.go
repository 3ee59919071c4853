//go:build linux

package evloop_test

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/internal/udp/udptest"
	"github.com/darkit/protoplex/protocols"
)

// burst has one client send n DNS queries at once (IDs first..first+n-1)
// and the backend answer them all at once, in order, once it has read
// them: the loop reads the client's queries in batches (recvmmsg), writes
// them up one flow's run at a time, reads the answers waiting on the
// flow's one upstream socket in batches and sends them back in batches
// (sendmmsg). It returns the upstream socket the queries came from.
func burst(t *testing.T, r *rig, b *dnsBackend, c *net.UDPConn, first, n int) netip.AddrPort {
	t.Helper()
	for i := range n {
		if _, err := c.Write(udptest.DNS(uint16(first+i), fmt.Sprintf("q%d.test", first+i), false)); err != nil {
			t.Fatal(err)
		}
	}
	var from netip.AddrPort
	for i := range n {
		id, up := b.query()
		if id != uint16(first+i) {
			t.Fatalf("query %d at the backend has ID %d: the flow's queries went up out of order", first+i, id)
		}
		if i > 0 && up != from {
			t.Fatalf("query %d came from %v, the earlier ones from %v: one client port is one flow", first+i, up, from)
		}
		from = up
	}
	for i := range n {
		b.send(from, udptest.DNS(uint16(first+i), fmt.Sprintf("q%d.test", first+i), true))
	}
	return from
}

// TestUDPBurstFromOnePort: a burst of queries from one client port (as
// dnsperf -c 1 sends, about a hundred in flight) is answered exactly once
// each, in order, and every datagram is counted both ways.
func TestUDPBurstFromOnePort(t *testing.T) {
	b := newDNSBackend(t)
	r := udpRig(t, protocols.NewDNSProtocol(b.addr()))
	c := r.dialUDP()
	const n = 100
	burst(t, r, b, c, 1, n)
	for i := range n {
		if id := r.replyID(c); id != uint16(1+i) {
			t.Fatalf("answer %d has ID %d: answers lost, repeated or out of order", 1+i, id)
		}
	}
	// Counted after each sendmmsg returned: wait for it, the client may
	// read its answers first.
	r.waitMetric(n, "protoplex_udp_datagrams_total", "protocol=DNS", "direction=client_to_backend")
	r.waitMetric(n, "protoplex_udp_datagrams_total", "protocol=DNS", "direction=backend_to_client")
	// The flow ended at its hundredth answer (udp_responses 1 per query).
	r.waitMetric(1, "protoplex_udp_flows_expired_total", "reason=answered")
	// Nothing else waits for the client: its next read is the answer to
	// its next query.
	id := uint16(n + 1)
	if _, err := c.Write(udptest.DNS(id, "next.test", false)); err != nil {
		t.Fatal(err)
	}
	qid, up := b.query()
	b.send(up, udptest.DNS(qid, "next.test", true))
	if got := r.replyID(c); got != id {
		t.Fatalf("after the burst the client read ID %d, want %d", got, id)
	}
	r.waitMetric(n+1, "protoplex_udp_datagrams_total", "protocol=DNS", "direction=backend_to_client")
}

// TestUDPBurstToAFullClient: a client that reads nothing while its burst
// is answered, with the smallest receive buffer, loses most answers in
// its own socket. The loop sends each answer once (counted as sent: the
// kernel took it), does not stall on the full client (another client is
// answered meanwhile) and holds nothing afterwards: the flow ends, no
// descriptor is left. What the full client does read comes in order, each
// answer once.
func TestUDPBurstToAFullClient(t *testing.T) {
	b := newDNSBackend(t)
	r := udpRig(t, protocols.NewDNSProtocol(b.addr()))
	full := r.dialUDP()
	rc, err := full.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	_ = rc.Control(func(s uintptr) { _ = unix.SetsockoptInt(int(s), unix.SOL_SOCKET, unix.SO_RCVBUF, 0) }) // the kernel's minimum
	fds := openFDs(t)
	const n = 64
	burst(t, r, b, full, 1, n)
	r.waitMetric(n, "protoplex_udp_datagrams_total", "protocol=DNS", "direction=backend_to_client")
	r.waitMetric(1, "protoplex_udp_flows_expired_total", "reason=answered")

	other := r.dialUDP()
	burst(t, r, b, other, 1000, 3)
	for i := range 3 {
		if id := r.replyID(other); id != uint16(1000+i) {
			t.Fatalf("the other client's answer %d has ID %d", i, id)
		}
	}
	r.waitMetric(n+3, "protoplex_udp_datagrams_total", "protocol=DNS", "direction=backend_to_client")

	last := uint16(0)
	buf := make([]byte, 512)
	for {
		k, rerr := 0, error(nil)
		_ = rc.Control(func(s uintptr) { k, _, rerr = unix.Recvfrom(int(s), buf, unix.MSG_DONTWAIT) })
		if rerr != nil {
			break // what its buffer held is read
		}
		if id := uint16(buf[0])<<8 | uint16(buf[1]); k < 2 || id <= last || id > n {
			t.Fatalf("the full client read ID %d after %d", id, last)
		} else {
			last = id
		}
	}
	testnet.Eventually(t, bound, func() bool { return r.udp.Flows() == 0 }, "flows = %d after every answer, want 0", r.udp.Flows())
	if now := openFDs(t); fds >= 0 && now-fds > 8 {
		t.Errorf("open fds grew by %d after the bursts", now-fds)
	}
}
