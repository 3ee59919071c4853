package protoplex

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/internal/udp/udptest"
)

// routeSeries counts the series of pm's registry whose labels name a
// route or protocol matching sub.
func routeSeries(t *testing.T, pm *ProtocolManager, sub string) int {
	t.Helper()
	mfs, err := pm.stats.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if (l.GetName() == "route" || l.GetName() == "protocol") && strings.Contains(l.GetValue(), sub) {
					n++
					break
				}
			}
		}
	}
	return n
}

// TestReloadsForgetRemovedRoutes: a configuration reloaded again and again,
// each time with a route of a new name, leaves the registry (and every
// scrape) the size of one configuration, not of all of them: the series of
// a route no configuration has any more, and no connection counts into,
// go.
func TestReloadsForgetRemovedRoutes(t *testing.T) {
	pm := NewProtocolManager(WithLogger(discardLogger()))
	t.Cleanup(func() { pm.Close() })
	const reloads = 40
	for i := range reloads {
		c, err := ParseConfig([]byte(fmt.Sprintf("protocols:\n  - name: TLS\n    sni: [\"r%d.churn.example\"]\n    target: \"127.0.0.1:1\"\n"+
			"  - name: SSH\n    target: \"127.0.0.1:1\"\n", i)), "churn.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if err := pm.UpdateConfig(c); err != nil {
			t.Fatal(err)
		}
	}
	one := routeSeries(t, pm, fmt.Sprintf("r%d.churn.example", reloads-1))
	if one == 0 {
		t.Fatal("the live route has no series")
	}
	// A removed route's series go at the first garbage collection after
	// nothing can count into them any more.
	testnet.Eventually(t, 20*time.Second, func() bool {
		runtime.GC()
		return routeSeries(t, pm, ".churn.example") == one
	}, "%d reloads with a new route each: the series of the removed routes stay (the live one has %d)", reloads, one)
	if n := routeSeries(t, pm, "SSH"); n == 0 {
		t.Fatal("the route every configuration kept lost its series")
	}
}

// TestDrainingRouteKeepsSeries: a reload that removes a route with a
// connection still open through it keeps the route's series while the
// connection lasts (it counts into them when it ends), and they go once
// it has ended.
func TestDrainingRouteKeepsSeries(t *testing.T) {
	echo := testnet.Echo(t)
	conf := func(name string) *Config {
		c, err := ParseConfig([]byte(fmt.Sprintf("protocols:\n  - name: %s\n    target: %q\n", name, echo)), "drain.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	pm := NewProtocolManager(WithLogger(discardLogger()))
	if err := pm.UpdateConfig(conf("SSH")); err != nil {
		t.Fatal(err)
	}
	addr := serveTest(t, pm)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hello := "SSH-2.0-drain\r\n"
	if _, err := c.Write([]byte(hello)); err != nil {
		t.Fatal(err)
	}
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, len(hello))); err != nil {
		t.Fatalf("no echo through the SSH route: %v", err)
	}
	if err := pm.UpdateConfig(conf("HTTP")); err != nil { // the SSH route goes
		t.Fatal(err)
	}
	for range 3 {
		runtime.GC()
	}
	if n := routeSeries(t, pm, "SSH"); n == 0 {
		t.Fatal("the series of a removed route went while a connection still counts into them")
	}
	c.Close()
	testnet.Eventually(t, 20*time.Second, func() bool {
		runtime.GC()
		return routeSeries(t, pm, "SSH") == 0
	}, "series of the removed route left after its last connection ended")
}

// TestStatusForgetsRemovedRoutes: the status page's per-route and
// per-target state (its routes and targets, the rate samples' keys, the
// operator's holds, the identification counts) is that of the live
// configuration after reloads that each replaced the route and its target
// with new ones: nothing of the removed ones is kept.
func TestStatusForgetsRemovedRoutes(t *testing.T) {
	pm := NewProtocolManager(WithLogger(discardLogger()))
	t.Cleanup(func() { pm.Close() })
	const reloads = 30
	var label, target string
	for i := range reloads {
		target = fmt.Sprintf("127.0.0.1:%d", 1000+i)
		c, err := ParseConfig([]byte(fmt.Sprintf("protocols:\n  - name: TLS\n    sni: [\"r%d.status.example\"]\n    target: %q\n", i, target)), "status.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if err := pm.UpdateConfig(c); err != nil {
			t.Fatal(err)
		}
		label = fmt.Sprintf("TLS[sni=r%d.status.example]", i)
		if err := (statusActions{pm}).SetTarget(label, target, "drain"); err != nil {
			t.Fatal(err)
		}
		pm.routing.Load().Entries[0].Stats.Identify(time.Millisecond)
	}
	st := pm.buildStatus()
	if len(st.Routes) != 1 || st.Routes[0].Route != label || len(st.Routes[0].Targets) != 1 || st.Routes[0].Targets[0].Target != target {
		t.Fatalf("status routes after %d reloads: %+v, want %s → %s only", reloads, st.Routes, label, target)
	}
	for k := range pm.counters() {
		if !strings.Contains(k, label) {
			t.Errorf("rate sample key %q of a removed route", k)
		}
	}
	pm.mu.Lock()
	holds := len(pm.holds)
	pm.mu.Unlock()
	if holds != 1 {
		t.Errorf("%d operator holds kept, want the live target's 1", holds)
	}
	testnet.Eventually(t, 20*time.Second, func() bool {
		runtime.GC()
		m := pm.buildStatus().Identify.Matched
		return len(m) == 1 && m[0].Name == "TLS" && m[0].Count == 1
	}, "identification counts of the removed routes kept")
}

// TestUDPReloadsForgetRemovedProtocols: UDP routes whose protocols a
// reload renamed leave no series once their flows have ended: neither the
// protoplex_udp_* series of the protocols nor the route series (the UDP
// table built for a snapshot does not keep a replaced snapshot alive).
func TestUDPReloadsForgetRemovedProtocols(t *testing.T) {
	echo := udptest.Echo(t, false)
	addr := testnet.FreeAddr(t)
	conf := func(i int) *Config {
		c, err := ParseConfig([]byte(fmt.Sprintf("server:\n  listen_udp: [%q]\n  udp_idle_timeout: 1s\nprotocols:\n  - name: churn%d\n    transport: udp\n    match_start_bytes: [\"6964\"]\n    target: %q\n",
			addr, i, echo)), "u.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	pm := NewProtocolManager(WithLogger(discardLogger()))
	if err := pm.UpdateConfig(conf(0)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); pm.Close(); pm.Wait() })
	if err := pm.StartUDP(ctx); err != nil {
		t.Fatal(err)
	}
	const reloads = 6
	for i := range reloads {
		if i > 0 {
			if err := pm.UpdateConfig(conf(i)); err != nil {
				t.Fatal(err)
			}
		}
		testnet.Eventually(t, 10*time.Second, func() bool { return udpAnswers(t, addr) }, "churn%d does not answer", i)
	}
	live := fmt.Sprintf("churn%d", reloads-1)
	if routeSeries(t, pm, live) == 0 {
		t.Fatal("the live UDP route has no series")
	}
	testnet.Eventually(t, 30*time.Second, func() bool {
		runtime.GC()
		return routeSeries(t, pm, "churn") == routeSeries(t, pm, live)
	}, "series of UDP protocols removed %d times are left after their flows ended", reloads-1)
}

// TestUDPCacheKeepsNoSnapshot: the UDP table a listener built for a routing
// snapshot does not keep that snapshot alive after a reload replaced it,
// even when no flow came since: the series of a TCP route the reload
// removed go all the same.
func TestUDPCacheKeepsNoSnapshot(t *testing.T) {
	echo := udptest.Echo(t, false)
	addr := testnet.FreeAddr(t)
	conf := func(i int) *Config {
		c, err := ParseConfig([]byte(fmt.Sprintf("server:\n  listen_udp: [%q]\nprotocols:\n  - name: mine\n    transport: udp\n    match_start_bytes: [\"6964\"]\n    target: %q\n"+
			"  - name: TLS\n    sni: [\"r%d.cache.example\"]\n    target: \"127.0.0.1:1\"\n", addr, echo, i)), "u.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	pm := NewProtocolManager(WithLogger(discardLogger()))
	if err := pm.UpdateConfig(conf(0)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); pm.Close(); pm.Wait() })
	if err := pm.StartUDP(ctx); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return udpAnswers(t, addr) }, "the UDP route does not answer")
	if err := pm.UpdateConfig(conf(1)); err != nil { // and no UDP flow after it
		t.Fatal(err)
	}
	testnet.Eventually(t, 20*time.Second, func() bool {
		runtime.GC()
		return routeSeries(t, pm, "r0.cache.example") == 0
	}, "the removed TLS route's series are kept by the UDP listener's cached table")
}

// BenchmarkReloadChurnScrape: what a scrape holds after reloads that each
// replace the route and its target with new ones (series, bytes),
// reported after the first and after the last of 1,000 reloads.
//
//	go test -run '^$' -bench ReloadChurnScrape -benchtime 1x .
func BenchmarkReloadChurnScrape(b *testing.B) {
	for range b.N {
		pm := NewProtocolManager(WithLogger(discardLogger()))
		scrape := func() (series, bytes int) {
			runtime.GC()
			runtime.GC() // the first runs the cleanups, the second sees them done
			rec := httptest.NewRecorder()
			pm.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
			mfs, err := pm.stats.Registry().Gather()
			if err != nil {
				b.Fatal(err)
			}
			for _, mf := range mfs {
				series += len(mf.GetMetric())
			}
			return series, rec.Body.Len()
		}
		const reloads = 1000
		for i := range reloads {
			c, err := ParseConfig([]byte(fmt.Sprintf("protocols:\n  - name: TLS\n    sni: [\"r%d.churn.example\"]\n    target: \"127.0.0.1:%d\"\n", i, 1000+i)), "churn.yaml")
			if err != nil {
				b.Fatal(err)
			}
			if err := pm.UpdateConfig(c); err != nil {
				b.Fatal(err)
			}
			if i == 0 {
				s, n := scrape()
				b.ReportMetric(float64(s), "series-after-1")
				b.ReportMetric(float64(n), "scrape-bytes-after-1")
			}
		}
		s, n := scrape()
		b.ReportMetric(float64(s), "series-after-1000")
		b.ReportMetric(float64(n), "scrape-bytes-after-1000")
		pm.Close()
	}
}

// TestCheckedConfigsLeaveNoSeries: configurations only checked
// (CheckConfig, the watcher's check before a reload), each with a route of
// a new name, leave no series of those routes: the backend sets built to
// check them are discarded, and their dial series go with them.
func TestCheckedConfigsLeaveNoSeries(t *testing.T) {
	pm := NewProtocolManager(WithLogger(discardLogger()))
	t.Cleanup(func() { pm.Close() })
	for i := range 20 {
		c, err := ParseConfig([]byte(fmt.Sprintf("protocols:\n  - name: TLS\n    sni: [\"c%d.checked.example\"]\n    target: \"127.0.0.1:1\"\n", i)), "check.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if err := pm.CheckConfig(c); err != nil {
			t.Fatal(err)
		}
	}
	testnet.Eventually(t, 20*time.Second, func() bool {
		runtime.GC()
		return routeSeries(t, pm, ".checked.example") == 0
	}, "configurations only checked left series of their routes")
}
