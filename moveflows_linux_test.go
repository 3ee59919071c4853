//go:build linux

package protoplex

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/handover"
	"github.com/darkit/protoplex/internal/udp/udptest"
)

// udpManagers returns a starter of managers with one TCP and one UDP
// listener and a UDP route ("id…") to a tagged echo, each stopped when
// the test ends.
func udpManagers(t *testing.T) func(opts ...Option) *ProtocolManager {
	t.Helper()
	echo := udptest.Echo(t, true)
	cfg, err := ParseConfig([]byte(fmt.Sprintf("server:\n  listen: [\"127.0.0.1:0\"]\n  listen_udp: \"127.0.0.1:0\"\n  data_plane: events\nprotocols:\n  - name: mine\n    transport: udp\n    match_start_bytes: [\"6964\"]\n    target: %q\n", echo)), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return func(opts ...Option) *ProtocolManager {
		pm := NewProtocolManager(append([]Option{WithLogger(discardLogger()), WithGracefulShutdownTimeout(moveBound)}, opts...)...)
		if err := pm.UpdateConfig(cfg); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		if err := pm.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cancel(); pm.Wait(); pm.Close() })
		return pm
	}
}

// TestMoveFlows: UDP flows move from one manager to another through
// MoveConnections and AdoptConnections, as in an upgrade: the second
// manager takes the first's sockets held (WithHeldUDP), the flows move
// after the (no) connections with their upstream sockets, and each goes on
// from the same source port (the tagged echo keeps a flow's first datagram
// per source port) through the second manager, which counts them.
func TestMoveFlows(t *testing.T) {
	start := udpManagers(t)
	old := start()
	addrs := old.Addrs()
	udpAddr := addrs[len(addrs)-1].String()
	const n = 30
	cs := make([]net.Conn, n)
	for i := range cs {
		c, err := net.Dial("udp", udpAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cs[i] = c
		if got, want := udpRoundTrip(t, c, fmt.Sprintf("id%d", i)), fmt.Sprintf("id%d|id%d", i, i); got != want {
			t.Fatalf("flow %d through the old manager: %q, want %q", i, got, want)
		}
	}

	socks, err := old.Sockets()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]*os.File{}
	for _, s := range socks {
		files[s.Key] = os.NewFile(uintptr(s.FD), s.Key)
	}
	nu := start(WithInheritedSockets(files), WithHeldUDP())
	for _, f := range files {
		f.Close() // the manager took duplicates
	}
	a, peer, err := handover.Pair(handover.Limits{Timeout: moveBound})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, err := handover.FileConn(peer, handover.Limits{Timeout: moveBound})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })

	ch := adoptAsync(nu, b)
	mv, err := old.MoveConnections(a)
	if err != nil || mv.Flows != n || mv.FlowsLeft != 0 {
		t.Fatalf("MoveConnections: %+v: %v", mv, err)
	}
	if got := waitAdopted(t, ch); got.err != nil {
		t.Fatalf("AdoptConnections: %+v", got)
	}
	for i, c := range cs {
		if got, want := udpRoundTrip(t, c, fmt.Sprintf("id%d-moved", i)), fmt.Sprintf("id%d|id%d-moved", i, i); got != want {
			t.Fatalf("flow %d after the move: %q, want %q (the same source port)", i, got, want)
		}
	}
	if o, m := old.udp.Flows(), nu.udp.Flows(); o != 0 || m != n {
		t.Errorf("flows: %d in the old manager, %d in the new, want 0 and %d", o, m, n)
	}
	rec := httptest.NewRecorder()
	nu.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if !regexp.MustCompile(fmt.Sprintf(`(?m)^protoplex_upgrade_flows_moved_total %d$`, n)).MatchString(rec.Body.String()) {
		t.Errorf("the new manager does not count %d flows moved in:\n%s", n, rec.Body)
	}
}

// udpRoundTrip sends msg on c and returns the answer.
func udpRoundTrip(t *testing.T, c net.Conn, msg string) string {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(moveBound))
	buf := make([]byte, 512)
	k, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no answer to %q: %v", msg, err)
	}
	return string(buf[:k])
}

// TestMoveFlowsNewProcessSilent: a new process that takes a batch of
// flows and then says nothing in time is alive: it reads the UDP
// listeners from the Done on, so the old process, which keeps the flows
// to drain, does not read them again. Every datagram sent after the move
// gave up reaches the new process's copy of the listening socket, none the
// old process (which read them all before the fix: two readers).
func TestMoveFlowsNewProcessSilent(t *testing.T) {
	old := udpManagers(t)()
	addrs := old.Addrs()
	udpAddr := addrs[len(addrs)-1].String()
	c, err := net.Dial("udp", udpAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if got := udpRoundTrip(t, c, "id0"); got != "id0|id0" {
		t.Fatalf("through the old manager: %q", got)
	}
	socks, err := old.Sockets()
	if err != nil {
		t.Fatal(err)
	}
	// The new process's copies of the listening sockets (one per loop, a
	// SO_REUSEPORT group: the kernel picks one by the client's address).
	var listeners []net.PacketConn
	for _, s := range socks {
		f := os.NewFile(uintptr(s.FD), s.Key)
		if s.Network == "udp" {
			ln, err := net.FilePacketConn(f)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			listeners = append(listeners, ln)
		}
		f.Close()
	}
	if len(listeners) == 0 {
		t.Fatal("no UDP socket among the old manager's")
	}
	a, b := handoverPair(t, 2*time.Second) // the old process's wait for each answer
	taken := make(chan error, 1)
	go func() { // the new process: it takes the batch and falls silent
		m, files, err := b.Recv()
		closeFiles(files)
		if err == nil && m.Kind != handover.Flows {
			err = fmt.Errorf("a %s", m.Kind)
		}
		taken <- err
	}()
	mv, err := old.MoveConnections(a)
	if err == nil || handover.PeerGone(err) || mv.Flows != 0 || mv.FlowsLeft != 1 {
		t.Fatalf("MoveConnections: %+v, %v; want a timeout and the flow kept", mv, err)
	}
	if err := <-taken; err != nil {
		t.Fatalf("the new process's batch: %v", err)
	}
	const n = 20
	for i := range n {
		if _, err := c.Write([]byte(fmt.Sprintf("id-after-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	// Read only once they are all queued: an old process that reads its
	// listeners again has them first.
	got := make(chan string, n)
	for _, ln := range listeners {
		go func() {
			buf := make([]byte, 512)
			for {
				k, _, err := ln.ReadFrom(buf)
				if err != nil {
					return
				}
				got <- string(buf[:k])
			}
		}()
	}
	timeout := time.After(moveBound)
	for i := range n {
		select {
		case d := <-got:
			if want := fmt.Sprintf("id-after-%d", i); d != want {
				t.Fatalf("datagram %d: %q, want %q", i, d, want)
			}
		case <-timeout:
			t.Fatalf("the new process's listeners read %d of %d datagrams (the old process read the rest)", i, n)
		}
	}
}
