package guard

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newGuard(t testing.TB, cfg Config) (*Guard, *clock) {
	t.Helper()
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	g, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), c.now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g, c
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestLists(t *testing.T) {
	g, _ := newGuard(t, Config{
		Whitelist: []string{"10.0.0.0/8", "2001:db8::/32", "192.0.2.7"},
		Blacklist: []string{"203.0.113.0/24", "198.51.100.9", "2001:db8:bad::/48", "::ffff:192.0.2.200/128"},
	})
	cases := []struct {
		addr string
		want Reason
		wl   bool
	}{
		{"10.1.2.3", Allowed, true},
		{"11.0.0.1", Allowed, false},
		{"192.0.2.7", Allowed, true},
		{"::ffff:10.9.9.9", Allowed, true}, // IPv4-mapped is the IPv4 address
		{"203.0.113.255", Blacklisted, false},
		{"203.0.114.0", Allowed, false},
		{"198.51.100.9", Blacklisted, false},
		{"198.51.100.10", Allowed, false},
		{"2001:db8:bad::1", Blacklisted, false}, // deny wins over the wider allow
		{"2001:db8:1::1", Allowed, true},
		{"192.0.2.200", Blacklisted, false}, // mapped CIDR entry applies to IPv4
	}
	for _, c := range cases {
		tk, r := g.Admit(ip(c.addr))
		if r != c.want || tk.Whitelisted() != c.wl {
			t.Errorf("%s: got %v/%v, want %v/%v", c.addr, r, tk.Whitelisted(), c.want, c.wl)
		}
	}
	if m := g.Metrics(); m.BlacklistedDenied != 4 || m.WhitelistedAccess != 4 || m.BlockedConnections != 4 {
		t.Fatalf("metrics %+v", m)
	}
	if _, err := New(Config{Blacklist: []string{"10.0.0.0/33"}}, nil, nil); err == nil || !strings.Contains(err.Error(), `"10.0.0.0/33"`) {
		t.Fatalf("bad entry: %v", err)
	}
}

func TestRateLimitPerSource(t *testing.T) {
	g, c := newGuard(t, Config{EnableRateLimit: true, RequestsPerSecond: 10, BurstSize: 5, Whitelist: []string{"127.0.0.9"}})
	a, b := ip("127.0.0.2"), ip("127.0.0.3")
	for i := 0; i < 5; i++ {
		tk, r := g.Admit(a)
		if r != Allowed {
			t.Fatalf("burst %d refused", i)
		}
		g.Release(tk)
	}
	if _, r := g.Admit(a); r != RateLimited {
		t.Fatalf("6th = %v", r)
	}
	tk, r := g.Admit(b)
	if r != Allowed {
		t.Fatal("another source is affected")
	}
	g.Release(tk)
	for i := 0; i < 100; i++ { // whitelisted sources bypass limits
		if _, r := g.Admit(ip("127.0.0.9")); r != Allowed {
			t.Fatal("whitelisted source limited")
		}
	}
	c.add(100 * time.Millisecond) // one token back
	if _, r := g.Admit(a); r != Allowed {
		t.Fatal("token not refilled")
	}
	if g.Metrics().RateLimitedRequests != 1 {
		t.Fatalf("%+v", g.Metrics())
	}
}

func TestPerIPConcurrency(t *testing.T) {
	g, _ := newGuard(t, Config{MaxConnectionsPerIP: 2})
	a := ip("127.0.0.2")
	first, _ := g.Admit(a)
	g.Admit(a)
	if _, r := g.Admit(a); r != PerIPLimit {
		t.Fatalf("third = %v", r)
	}
	g.Release(first)
	if _, r := g.Admit(a); r != Allowed {
		t.Fatal("slot not freed")
	}
}

func TestBanEscalatesAndExpires(t *testing.T) {
	g, c := newGuard(t, Config{EnableDDoSGuard: true, FailureThreshold: 3, Window: 10 * time.Second,
		BanDuration: 10 * time.Second, MaxBanDuration: 25 * time.Second})
	var banned []time.Duration
	g.SetOnBan(func(_ netip.Addr, d time.Duration) { banned = append(banned, d) })
	a := ip("198.51.100.1")
	fail := func(n int) {
		for i := 0; i < n; i++ {
			g.IdentifyFailed(a)
		}
	}
	fail(2)
	tk, r := g.Admit(a)
	if r != Allowed {
		t.Fatal("banned below threshold")
	}
	g.Release(tk)
	fail(1)
	if _, r := g.Admit(a); r != Banned {
		t.Fatal("not banned at threshold")
	}
	c.add(11 * time.Second)
	tk, r = g.Admit(a)
	if r != Allowed {
		t.Fatal("ban did not expire")
	}
	g.Release(tk)
	fail(3)
	c.add(11 * time.Second)
	if _, r := g.Admit(a); r != Banned {
		t.Fatal("second ban not longer")
	}
	c.add(10 * time.Second)
	fail(3)
	if fmt.Sprint(banned) != "[10s 20s 25s]" {
		t.Fatalf("bans %v, want doubling capped at max", banned)
	}
	if g.Metrics().DDoSAttacks != 3 {
		t.Fatalf("%+v", g.Metrics())
	}
	// Failures spread beyond the window never ban.
	b := ip("198.51.100.2")
	for i := 0; i < 10; i++ {
		g.IdentifyFailed(b)
		g.IdentifyFailed(b)
		c.add(11 * time.Second)
	}
	if _, r := g.Admit(b); r != Allowed {
		t.Fatal("slow failures banned")
	}
}

// TestSpoofedFloodStaysBounded: more distinct sources than the table holds
// leave at most a table's worth of state, and only until the janitor's sweep.
func TestSpoofedFloodStaysBounded(t *testing.T) {
	g, c := newGuard(t, Config{EnableRateLimit: true, RequestsPerSecond: 5})
	n := 1_200_000
	if testing.Short() {
		g.shardCapacity = 512
		n = 50_000
	}
	for i := 0; i < n; i++ {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		tk, _ := g.Admit(a)
		g.Release(tk)
	}
	if capacity := int64(shards * g.shardCapacity); g.Entries() > capacity || g.Entries() != int64(n)-g.Metrics().EvictedSources {
		t.Fatalf("entries %d, evicted %d, capacity %d", g.Entries(), g.Metrics().EvictedSources, capacity)
	}
	if g.Metrics().GuardFullRefused != 0 {
		t.Fatal("idle sources were not evicted")
	}
	c.add(2 * idleTTL)
	g.Sweep()
	if g.Entries() != 0 {
		t.Fatalf("after sweep: %d entries", g.Entries())
	}
}

func TestConcurrentAdmit(t *testing.T) {
	g, _ := newGuard(t, Config{EnableRateLimit: true, RequestsPerSecond: 1e6, BurstSize: 1e6, MaxConnectionsPerIP: 1000, EnableDDoSGuard: true})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				a := netip.AddrFrom4([4]byte{127, 0, byte(w), byte(i % 7)})
				if tk, r := g.Admit(a); r == Allowed {
					g.Release(tk)
				}
				g.IdentifyFailed(a)
			}
		}(w)
	}
	wg.Wait()
	if g.Metrics().TotalConnections != 16000 {
		t.Fatalf("%+v", g.Metrics())
	}
}

func TestLoggerSuppresses(t *testing.T) {
	var buf bytes.Buffer
	c := &clock{t: time.Unix(100, 0)}
	l := NewRateLimitedLogger(slog.New(slog.NewTextHandler(&buf, nil)), 3, c.now)
	for i := 0; i < 1000; i++ {
		l.Warn("refused")
	}
	c.add(time.Second)
	l.Warn("refused")
	out := buf.String()
	if n := strings.Count(out, "msg=refused"); n != 4 {
		t.Fatalf("%d lines written", n)
	}
	if !strings.Contains(out, "count=997") {
		t.Fatalf("no suppression summary: %s", out)
	}
}

func TestAddrOf(t *testing.T) {
	a := &net.TCPAddr{IP: net.ParseIP("::ffff:127.0.0.2"), Port: 1}
	if got := AddrOf(a); got != ip("127.0.0.2") {
		t.Fatalf("%v", got)
	}
}

func BenchmarkAdmit(b *testing.B) {
	for _, n := range []int{10, 10_000} {
		b.Run(fmt.Sprintf("cidrs=%d", n), func(b *testing.B) {
			var black []string
			for i := 0; i < n; i++ {
				black = append(black, fmt.Sprintf("10.%d.%d.0/24", i>>8&255, i&255))
				black = append(black, fmt.Sprintf("172.16.%d.%d", i>>8&255, i&255))
			}
			black = append(black, "2001:db8::/32", "198.18.0.0/15")
			g, _ := newGuard(b, Config{Blacklist: black, EnableRateLimit: true, RequestsPerSecond: 1e9, BurstSize: 1e9})
			a := ip("192.0.2.1")
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if tk, r := g.Admit(a); r == Allowed {
					g.Release(tk)
				}
			}
		})
	}
}

// BenchmarkFullTableMemory fills the source table and reports the heap it
// takes per source (docs/security.md quotes it):
// go test -run '^$' -bench FullTableMemory -benchtime 1x ./internal/guard
func BenchmarkFullTableMemory(b *testing.B) {
	for _, c := range []struct {
		name string
		cfg  Config
	}{
		{"cap", Config{MaxConnectionsPerIP: 5}},
		{"cap+rate+ddos", Config{MaxConnectionsPerIP: 5, EnableRateLimit: true, RequestsPerSecond: 5, EnableDDoSGuard: true}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				g, _ := newGuard(b, c.cfg)
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				for i := range shards * defaultShardCapacity {
					tk, _ := g.Admit(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
					g.Release(tk)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				heap := float64(after.HeapAlloc - before.HeapAlloc)
				b.ReportMetric(heap/float64(g.Entries()), "bytes/source")
				b.ReportMetric(heap/(1<<20), "MiB")
				runtime.KeepAlive(g)
				g.Close()
			}
		})
	}
}

// TestAdoptCountsAnEstablishedConnection: a connection an upgrade moved in
// is counted against its source whatever the limits say (it is
// established), and its ticket releases it like Admit's.
func TestAdoptCountsAnEstablishedConnection(t *testing.T) {
	g, _ := newGuard(t, Config{MaxConnectionsPerIP: 1})
	a := ip("127.0.0.2")
	t1 := g.Adopt(a)
	t2 := g.Adopt(a) // over the per-source limit: taken all the same
	if _, r := g.Admit(a); r != PerIPLimit {
		t.Fatalf("a new connection beside two adopted: %v", r)
	}
	g.Release(t1)
	g.Release(t2)
	if tk, r := g.Admit(a); r != Allowed {
		t.Fatalf("after both released: %v", r)
	} else {
		g.Release(tk)
	}
}

// TestUnban: a remote ban lifted by Unban admits the source again, an IPv6
// source by its /64, and an Unban of an unknown source changes nothing.
func TestUnban(t *testing.T) {
	g, _ := newGuard(t, Config{EnableDDoSGuard: true, FailureThreshold: 3, Window: 10 * time.Second, BanDuration: 10 * time.Second})
	for _, tc := range []struct{ ban, probe string }{{"198.51.100.7", "198.51.100.7"}, {"2001:db8:1:2::1", "2001:db8:1:2::99"}} {
		g.Ban(ip(tc.ban), time.Minute)
		if _, r := g.Admit(ip(tc.probe)); r != Banned {
			t.Fatalf("%s not banned", tc.probe)
		}
		g.Unban(ip(tc.ban))
		tk, r := g.Admit(ip(tc.probe))
		if r != Allowed {
			t.Fatalf("%s still refused (%v) after Unban", tc.probe, r)
		}
		g.Release(tk)
	}
	g.Unban(ip("192.0.2.1"))
	if e := g.Entries(); e != 2 {
		t.Fatalf("%d entries, want 2: Unban of an unknown source created one", e)
	}
}
