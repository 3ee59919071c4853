package udp

import (
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/guard"
	"github.com/darkit/protoplex/internal/metrics"
	"github.com/darkit/protoplex/internal/routing"
	"github.com/darkit/protoplex/internal/udp/udptest"
	"github.com/darkit/protoplex/protocols"
)

// TableOf takes the routes on UDP with host:port targets, with their idle
// timeouts; Follow builds one table per snapshot.
func TestTableOfAndFollow(t *testing.T) {
	st := metrics.New()
	game := &protocols.Protocol{Name: "game", Transport: "udp", MatchStartBytes: [][]byte{{0xfe}}, Target: "127.0.0.1:7777,unix:/run/g.sock"}
	tcpOnly := protocols.NewDNSProtocol("127.0.0.1:53")
	tcpOnly.Transport = "tcp"
	protos := []*protocols.Protocol{protocols.NewSSHProtocol("127.0.0.1:22"), protocols.NewDNSProtocol("127.0.0.1:53"), tcpOnly, game}
	plan, err := routing.Build(protos, 0, nil, st, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rt := plan.Commit(t.Context())
	t.Cleanup(rt.Close)
	routes := TableOf(rt, 0, st.UDP).Routes()
	if len(routes) != 2 || routes[0].Name != "DNS" || routes[1].Name != "game" {
		t.Fatalf("routes %+v, want DNS and game", routes)
	}
	if routes[0].Index != 1 || routes[0].IdleTimeout != DNSIdleTimeout || routes[1].IdleTimeout != DefaultIdleTimeout {
		t.Errorf("DNS index %d idle %v, game idle %v", routes[0].Index, routes[0].IdleTimeout, routes[1].IdleTimeout)
	}
	if got := routes[1].Targets; len(got) != 1 || got[0] != "127.0.0.1:7777" {
		t.Errorf("game targets %v: want the host:port one only", got)
	}
	if r, _ := TableOf(rt, 0, st.UDP).Decide([][]byte{{0xfe, 1}}, false); r == nil || r.Name != "game" {
		t.Errorf("a datagram starting 0xfe: got %v, want game", r)
	}
	if got := TableOf(rt, 30*time.Second, st.UDP).Routes()[0].IdleTimeout; got != 30*time.Second {
		t.Errorf("udp_idle_timeout 30s: DNS idle %v", got)
	}
	game.UDPIdleTimeout = 5 * time.Second // the route's own outranks the server's
	if got := TableOf(rt, 30*time.Second, st.UDP).Routes()[1].IdleTimeout; got != 5*time.Second {
		t.Errorf("game's udp_idle_timeout 5s under a server-wide 30s: idle %v", got)
	}
	game.UDPIdleTimeout = 0
	if rs := TableOf(rt, 0, st.UDP).Routes(); rs[0].state.responses != 1 || rs[1].state.responses != 0 {
		t.Errorf("udp_responses by default: DNS %d, game %d; want 1 and 0 (no limit)", rs[0].state.responses, rs[1].state.responses)
	}
	game.UDPResponses, protos[1].UDPResponses = 3, -1
	if rs := TableOf(rt, 0, st.UDP).Routes(); rs[0].state.responses != 0 || rs[1].state.responses != 3 {
		t.Errorf("udp_responses -1 and 3: DNS %d, game %d; want 0 (no limit) and 3", rs[0].state.responses, rs[1].state.responses)
	}
	game.UDPResponses, protos[1].UDPResponses = 0, 0

	cur := rt
	server := Settings{MaxFlows: 7, AccessLog: true}
	table, settings := Follow(func() *routing.Table { return cur }, func() Settings { return server }, st.UDP)
	if a, b := table(), table(); a != b {
		t.Error("one snapshot, two tables")
	}
	first := table()
	server.IdleTimeout = time.Minute
	if table() == first {
		t.Error("a new udp_idle_timeout kept the table")
	}
	if s := settings(); s.MaxFlows != 7 || !s.AccessLog {
		t.Errorf("settings %+v", s)
	}
}

// The guard admits each new flow and is released when it ends: with one
// flow per IP, a second source port is refused until the first expires.
func TestGuardAdmitsAndReleasesFlows(t *testing.T) {
	g, err := guard.New(guard.Config{MaxConnectionsPerIP: 1, Blacklist: []string{"127.0.0.66"}}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	st := metrics.New().UDP
	table := NewTable([]Route{{Name: "A", Detect: prefix("a"), Targets: []string{udptest.Echo(t, false)}, IdleTimeout: time.Second}}, st)
	clk := &clock{}
	e := New(Options{Table: func() *Table { return table }, Guard: g, Stats: st, Now: clk.now, Sweep: time.Hour})
	t.Cleanup(e.Close)
	if _, err := e.Listen(t.Context(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	ln := e.lns[0]
	src := netip.MustParseAddr("127.0.0.5")
	e.datagram(ln, netip.AddrPortFrom(src, 1000), []byte("a"))
	e.datagram(ln, netip.AddrPortFrom(src, 1001), []byte("a"))
	e.datagram(ln, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.66"), 1000), []byte("a"))
	if n := e.Flows(); n != 1 {
		t.Fatalf("flows = %d, want 1", n)
	}
	if a, b := value(t, st.Refused(metrics.UDPPerIPLimit)), value(t, st.Refused(metrics.UDPBlacklist)); a != 1 || b != 1 {
		t.Fatalf("refused per_ip_limit %v, blacklist %v; want 1 each", a, b)
	}
	clk.add(2 * time.Second)
	e.Sweep(clk.now())
	e.datagram(ln, netip.AddrPortFrom(src, 1001), []byte("a"))
	if n := e.Flows(); n != 1 {
		t.Fatalf("flows = %d after the first expired, want the second admitted", n)
	}
}
