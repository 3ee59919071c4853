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

// TestMoveFlows: UDP flows move from one manager to another through
// MoveConnections and AdoptConnections, as in an upgrade: the second
// manager takes the first's sockets held (WithHeldUDP), the flows move
// after the (no) connections with their upstream sockets, and each goes on
// from the same source port (the tagged echo keeps a flow's first datagram
// per source port) through the second manager, which counts them.
func TestMoveFlows(t *testing.T) {
	echo := udptest.Echo(t, true)
	cfg, err := ParseConfig([]byte(fmt.Sprintf("server:\n  listen: [\"127.0.0.1:0\"]\n  listen_udp: \"127.0.0.1:0\"\n  data_plane: events\nprotocols:\n  - name: mine\n    transport: udp\n    match_start_bytes: [\"6964\"]\n    target: %q\n", echo)), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	start := func(opts ...Option) *ProtocolManager {
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
