package protoplex

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/metrics"
	"github.com/darkit/protoplex/internal/testnet"
)

// TestStatusHoldsSurviveReload: a target drained through the actions gets
// no new connection, shows as held in the snapshot, and stays held across
// a reload that rebuilds its backend set; ready releases it. Unban and
// close act on the guard and the connection set. /status is served on the
// metrics port only, never on the data port.
func TestStatusHoldsSurviveReload(t *testing.T) {
	a, b := testnet.Banner(t, "A"), testnet.Banner(t, "B")
	cfgText := func(balance string) string {
		return fmt.Sprintf("protocols:\n  - name: SSH\n    target: %q\n    balance: %s\n", a+","+b, balance)
	}
	pm := NewProtocolManager(WithLogger(discardLogger()))
	defer pm.Close()
	apply := func(text string) {
		t.Helper()
		cfg, err := ParseConfig([]byte(text), "status.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if err := pm.UpdateConfig(cfg); err != nil {
			t.Fatal(err)
		}
	}
	apply(cfgText("round_robin"))
	addr := serveTest(t, pm)
	if err := pm.EnableAdmin([]byte("short")); err == nil {
		t.Fatal("EnableAdmin accepted a 5-byte token")
	}
	if err := pm.ServeMetrics("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	act := statusActions{pm}
	if err := act.SetTarget("SSH", a, "drain"); err != nil {
		t.Fatal(err)
	}
	if err := act.SetTarget("SSH", "127.0.0.1:1", "drain"); err == nil {
		t.Fatal("SetTarget of a target the route does not have")
	}
	banners := func() string {
		var got []string
		for range 4 {
			reply, err := testnet.RoundTrip(addr, "SSH-2.0-x\r\n")
			if err != nil || reply == "" {
				t.Fatalf("round trip: %q %v", reply, err)
			}
			got = append(got, reply[:1])
		}
		return strings.Join(got, "")
	}
	if got := banners(); got != "BBBB" {
		t.Fatalf("with A drained, 4 connections went to %q", got)
	}
	target := func() metrics.TargetState {
		pm.statusChanged()
		for _, r := range pm.statusSnapshot().Routes {
			for _, tg := range r.Targets {
				if tg.Target == a {
					return tg
				}
			}
		}
		t.Fatal("target A is not in the snapshot")
		return metrics.TargetState{}
	}
	if tg := target(); tg.State != "drain" || !tg.Held {
		t.Fatalf("A in the snapshot: %+v", tg)
	}
	if tot := pm.statusSnapshot().Totals; runtime.GOOS == "linux" && (tot.FDsOpen == 0 || tot.FDsLimit == 0 || tot.MemoryBytes == 0) {
		t.Fatalf("the process figures are missing: %+v", tot)
	}
	waitFor(t, func() bool { // counted as each connection ends
		pm.statusChanged()
		for _, r := range pm.statusSnapshot().Routes {
			for _, tg := range r.Targets {
				if tg.Target == b {
					return tg.Connections == 4 && tg.BytesIn == 4*int64(len("SSH-2.0-x\r\n")) && tg.BytesOut == 4*int64(len("BSSH-2.0-x\r\n"))
				}
			}
		}
		return false
	})
	apply(cfgText("first")) // another balance: a new backend set
	if tg := target(); tg.State != "drain" || !tg.Held {
		t.Fatalf("A after a reload: %+v", tg)
	}
	if got := banners(); got != "BBBB" {
		t.Fatalf("after a reload, with A drained, connections went to %q", got)
	}
	if err := act.SetTarget("SSH", a, "ready"); err != nil {
		t.Fatal(err)
	}
	if got := banners(); got != "AAAA" { // balance: first
		t.Fatalf("after ready, connections went to %q", got)
	}

	pm.Ban(netip.MustParseAddr("192.0.2.9"), time.Minute)
	pm.statusChanged()
	if g := pm.statusSnapshot().Guard; g.BannedTotal != 1 || len(g.Banned) != 1 || g.Banned[0].Source != "192.0.2.9" || g.Banned[0].Reason != "remote" {
		t.Fatalf("the snapshot's bans: %+v", g)
	}
	if err := act.Unban(netip.MustParseAddr("192.0.2.9")); err != nil {
		t.Fatal(err)
	}
	if err := act.Unban(netip.MustParseAddr("192.0.2.9")); err == nil {
		t.Fatal("a second unban found a ban")
	}
	if err := act.CloseConn(1 << 60); err == nil {
		t.Fatal("closing an unknown connection")
	}
	// Close one connection by its id: the one listed with this client's address.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	fmt.Fprint(c, "SSH-2.0-held\r\n")
	if line, err := r.ReadString('\n'); err != nil || !strings.HasSuffix(line, "SSH-2.0-held\r\n") {
		t.Fatalf("the held connection: %q %v", line, err)
	}
	var id uint64
	pm.statusChanged()
	for _, lc := range pm.statusSnapshot().Connections.Listed {
		if lc.Client == c.LocalAddr().String() {
			id = lc.ID
		}
	}
	if id == 0 {
		t.Fatalf("the connection from %s is not listed: %+v", c.LocalAddr(), pm.statusSnapshot().Connections)
	}
	if err := act.CloseConn(id); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("the connection closed by id is still open")
	}

	code, body := get(t, "http://"+pm.MetricsAddr()+"/status")
	if code != http.StatusOK || !strings.Contains(body, a) {
		t.Fatalf("/status on the metrics port: %d", code)
	}
	resp, _ := testnet.RoundTrip(addr, "GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
	if strings.Contains(resp, "protoplex") || strings.Contains(resp, "200 OK") {
		t.Fatalf("the data port answered /status: %q", resp)
	}
}

// TestHeldTargetsAndReadiness: a route whose checked targets are all held
// can take no connection, so the instance is not ready; ready again after
// "ready".
func TestHeldTargetsAndReadiness(t *testing.T) {
	a := testnet.Banner(t, "A")
	pm := NewProtocolManager(WithLogger(discardLogger()))
	defer pm.Close()
	cfg, err := ParseConfig([]byte(fmt.Sprintf("protocols:\n  - name: SSH\n    target: %q\n    health_check: {interval: 100ms}\n", a)), "ready.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := pm.UpdateConfig(cfg); err != nil {
		t.Fatal(err)
	}
	serveTest(t, pm)
	waitFor(t, func() bool { ok, _ := pm.Ready(); return ok })
	act := statusActions{pm}
	if err := act.SetTarget("SSH", a, "maint"); err != nil {
		t.Fatal(err)
	}
	if ok, why := pm.Ready(); ok || why != "no protocol has a healthy target" {
		t.Fatalf("with the only target in maint: ready %v %q", ok, why)
	}
	if err := act.SetTarget("SSH", a, "ready"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { ok, _ := pm.Ready(); return ok })
}

// BenchmarkStatusSnapshot: building the snapshot and taking one rate
// sample for 100 routes of 10 targets each (1,000 targets); a snapshot is
// built at most twice a second, a sample once a second.
func BenchmarkStatusSnapshot(b *testing.B) {
	var text strings.Builder
	text.WriteString("protocols:\n")
	for i := range 100 {
		var targets []string
		for j := range 10 {
			targets = append(targets, fmt.Sprintf("%q", fmt.Sprintf("127.0.%d.%d:22", i, j+1)))
		}
		fmt.Fprintf(&text, "  - name: TLS\n    sni: [\"h%d.example\"]\n    target: [%s]\n", i, strings.Join(targets, ", "))
	}
	cfg, err := ParseConfig([]byte(text.String()), "bench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	pm := NewProtocolManager(WithLogger(discardLogger()))
	defer pm.Close()
	if err := pm.UpdateConfig(cfg); err != nil {
		b.Fatal(err)
	}
	b.Run("snapshot", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			pm.buildStatus()
		}
	})
	b.Run("sample", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			pm.status.rates.Add(time.Now(), pm.counters())
		}
	})
}
