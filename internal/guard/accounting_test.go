package guard

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

// checkInvariants: every entry's active count equals the tickets held for
// it, the idle list holds exactly the entries with active == 0, and no entry
// with a held ticket has left its shard.
func checkInvariants(t *testing.T, g *Guard, held []Ticket) {
	t.Helper()
	for i := range g.shards { // the janitor may sweep meanwhile
		g.shards[i].mu.Lock()
		defer g.shards[i].mu.Unlock()
	}
	want := map[*entry]int{}
	for _, tk := range held {
		if tk.e != nil {
			want[tk.e]++
			if tk.sh.m[tk.e.key] != tk.e {
				t.Fatalf("entry %v with %d open connections was deleted", tk.e.key, tk.e.active)
			}
		}
	}
	var total int64
	for i := range g.shards {
		sh := &g.shards[i]
		total += int64(len(sh.m))
		if len(sh.m) > g.shardCapacity {
			t.Fatalf("shard %d holds %d > %d", i, len(sh.m), g.shardCapacity)
		}
		idle := 0
		for e := sh.idle.Front(); e != nil; e = sh.idle.Next(e) {
			if e.active != 0 || sh.m[e.key] != e {
				t.Fatalf("idle list holds %v (active %d, in map %v)", e.key, e.active, sh.m[e.key] == e)
			}
			if next := sh.idle.Next(e); next != nil && next.lastSeen.After(e.lastSeen) {
				t.Fatalf("idle list out of recency order at %v", e.key)
			}
			idle++
		}
		busy := 0
		for _, e := range sh.m {
			if e.active != want[e] {
				t.Fatalf("%v: active %d, %d tickets held", e.key, e.active, want[e])
			}
			if e.active > 0 {
				busy++
			}
		}
		if idle+busy != len(sh.m) {
			t.Fatalf("shard %d: %d idle + %d busy != %d entries", i, idle, busy, len(sh.m))
		}
	}
	if total != g.Entries() {
		t.Fatalf("Entries() = %d, shards hold %d", g.Entries(), total)
	}
}

// TestReleaseAfterReloadWithoutLimits: 3 connections held at a cap of 3, a
// reload without security:, the 3 closed, the cap back. The source is
// admitted again (its count balanced) and its state swept once idle.
func TestReleaseAfterReloadWithoutLimits(t *testing.T) {
	capped := Config{MaxConnectionsPerIP: 3}
	g, c := newGuard(t, capped)
	a := ip("192.0.2.10")
	var held []Ticket
	for i := 0; i < 3; i++ {
		tk, r := g.Admit(a)
		if r != Allowed {
			t.Fatalf("connection %d: %v", i, r)
		}
		held = append(held, tk)
	}
	if _, r := g.Admit(a); r != PerIPLimit {
		t.Fatalf("4th: %v", r)
	}
	if err := g.Update(Config{}); err != nil {
		t.Fatal(err)
	}
	for _, tk := range held {
		g.Release(tk)
	}
	if err := g.Update(capped); err != nil {
		t.Fatal(err)
	}
	held = held[:0]
	for i := 0; i < 3; i++ {
		tk, r := g.Admit(a)
		if r != Allowed {
			t.Fatalf("after the reloads, connection %d: %v", i, r)
		}
		held = append(held, tk)
	}
	checkInvariants(t, g, held)
	for _, tk := range held {
		g.Release(tk)
	}
	c.add(2 * idleTTL)
	g.Sweep()
	if g.Entries() != 0 {
		t.Fatalf("%d entries left after sweep", g.Entries())
	}
}

// TestListChangeBetweenAdmitAndRelease: a source whitelisted or blacklisted
// while its connections are open releases exactly what it was counted for.
func TestListChangeBetweenAdmitAndRelease(t *testing.T) {
	base := Config{MaxConnectionsPerIP: 2}
	g, _ := newGuard(t, base)
	a := ip("192.0.2.20")
	counted, _ := g.Admit(a)
	if err := g.Update(Config{MaxConnectionsPerIP: 2, Whitelist: []string{"192.0.2.0/24"}}); err != nil {
		t.Fatal(err)
	}
	free, _ := g.Admit(a) // whitelisted: not counted
	if !free.Whitelisted() {
		t.Fatal("not whitelisted")
	}
	if err := g.Update(Config{MaxConnectionsPerIP: 2, Blacklist: []string{"192.0.2.20"}}); err != nil {
		t.Fatal(err)
	}
	g.Release(free)
	checkInvariants(t, g, []Ticket{counted})
	g.Release(counted)
	if err := g.Update(base); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, g, nil)
	for i := 0; i < 2; i++ {
		if _, r := g.Admit(a); r != Allowed {
			t.Fatalf("connection %d: %v", i, r)
		}
	}
}

// TestRandomAccounting runs random sequences of connections, failures,
// bans, reloads, clock steps and sweeps, on a roomy and on a tiny table.
func TestRandomAccounting(t *testing.T) {
	configs := []Config{
		{},
		{MaxConnectionsPerIP: 2},
		{MaxConnectionsPerIP: 5, EnableRateLimit: true, RequestsPerSecond: 50, BurstSize: 20},
		{EnableRateLimit: true, RequestsPerSecond: 1},
		{EnableDDoSGuard: true, FailureThreshold: 2, BanDuration: time.Second, MaxBanDuration: 4 * time.Second},
		{MaxConnectionsPerIP: 3, Whitelist: []string{"10.0.0.0/30", "2001:db8::/126"}},
		{MaxConnectionsPerIP: 3, Blacklist: []string{"10.0.0.4/31"}, EnableDDoSGuard: true},
	}
	sources := []netip.Addr{}
	for i := 0; i < 12; i++ {
		sources = append(sources, netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}))
	}
	for i := 0; i < 6; i++ { // three /64s, two hosts each
		sources = append(sources, netip.MustParseAddr(fmt.Sprintf("2001:db8:0:%d::%d", i/2, i)))
	}
	for _, shardCap := range []int{defaultShardCapacity, 1} {
		for seed := uint64(1); seed <= 20; seed++ {
			t.Run(fmt.Sprintf("cap=%d/seed=%d", shardCap, seed), func(t *testing.T) {
				g, c := newGuard(t, configs[0])
				g.shardCapacity = shardCap
				rng := rand.New(rand.NewPCG(seed, 7))
				var held []Ticket
				for step := 0; step < 3000; step++ {
					src := sources[rng.IntN(len(sources))]
					switch op := rng.IntN(100); {
					case op < 40:
						if tk, r := g.Admit(src); r == Allowed {
							held = append(held, tk)
						}
					case op < 70:
						if len(held) > 0 {
							i := rng.IntN(len(held))
							g.Release(held[i])
							held = append(held[:i], held[i+1:]...)
						}
					case op < 78:
						g.IdentifyFailed(src)
					case op < 80:
						g.Ban(src, time.Duration(rng.IntN(3000))*time.Millisecond)
					case op < 88:
						if err := g.Update(configs[rng.IntN(len(configs))]); err != nil {
							t.Fatal(err)
						}
					case op < 96:
						c.add(time.Duration(rng.IntN(20_000)) * time.Millisecond)
					default:
						g.Sweep()
					}
					checkInvariants(t, g, held)
				}
				for _, tk := range held {
					g.Release(tk)
				}
				checkInvariants(t, g, nil)
				c.add(idleTTL + MaxBanDuration + time.Minute)
				g.Sweep()
				if g.Entries() != 0 {
					t.Fatalf("%d entries left after the final sweep", g.Entries())
				}
			})
		}
	}
}

func TestIPv6TrackedPer64(t *testing.T) {
	g, _ := newGuard(t, Config{MaxConnectionsPerIP: 2})
	if _, r := g.Admit(ip("2001:db8:1:2::1")); r != Allowed {
		t.Fatal(r)
	}
	if _, r := g.Admit(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")); r != Allowed {
		t.Fatal(r)
	}
	if _, r := g.Admit(ip("2001:db8:1:2:abcd::7")); r != PerIPLimit {
		t.Fatalf("third host of the same /64: %v", r)
	}
	if _, r := g.Admit(ip("2001:db8:1:3::1")); r != Allowed {
		t.Fatalf("next /64: %v", r)
	}
	if _, r := g.Admit(ip("fe80::1%eth0")); r != Allowed {
		t.Fatalf("zoned address: %v", r)
	}
	if g.Entries() != 3 {
		t.Fatalf("%d entries, want 3 (two /64s and fe80::/64)", g.Entries())
	}
}

// sameShard returns n distinct IPv4 sources that land in one shard.
func sameShard(g *Guard, n int) []netip.Addr {
	groups := map[*shard][]netip.Addr{}
	for i := 0; ; i++ {
		a := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
		sh := g.shardOf(trackKey(a))
		groups[sh] = append(groups[sh], a)
		if len(groups[sh]) == n {
			return groups[sh]
		}
	}
}

// TestFullTableEvictsLeastRecentlySeenIdle: a full shard makes room by
// dropping its least recently seen source without open connections; when
// every source in it is busy, a new source is refused, not let in untracked.
func TestFullTableEvictsLeastRecentlySeenIdle(t *testing.T) {
	g, c := newGuard(t, Config{MaxConnectionsPerIP: 1})
	g.shardCapacity = 3
	src := sameShard(g, 6)
	oldIdle, newIdle, busy, fresh, fresh2, fresh3 := src[0], src[1], src[2], src[3], src[4], src[5]
	admit := func(a netip.Addr, want Reason) Ticket {
		t.Helper()
		tk, r := g.Admit(a)
		if r != want {
			t.Fatalf("%v: %v, want %v", a, r, want)
		}
		c.add(time.Second)
		return tk
	}
	g.Release(admit(oldIdle, Allowed))
	g.Release(admit(newIdle, Allowed))
	busyTk := admit(busy, Allowed)
	freshTk := admit(fresh, Allowed) // evicts oldIdle
	if m := g.Metrics(); m.EvictedSources != 1 || g.Entries() != 3 {
		t.Fatalf("evicted %d, entries %d", m.EvictedSources, g.Entries())
	}
	if g.shardOf(trackKey(oldIdle)).m[oldIdle] != nil || g.shardOf(trackKey(newIdle)).m[newIdle] == nil {
		t.Fatal("evicted the wrong source")
	}
	fresh2Tk := admit(fresh2, Allowed) // evicts newIdle; now all three busy
	admit(fresh3, GuardFull)
	admit(busy, PerIPLimit) // a tracked source still meets its own limit
	if m := g.Metrics(); m.GuardFullRefused != 1 || m.EvictedSources != 2 {
		t.Fatalf("%+v", m)
	}
	checkInvariants(t, g, []Ticket{busyTk, freshTk, fresh2Tk})
	g.Release(busyTk)
	admit(fresh3, Allowed) // busy is idle again, so it gives way
	// The whitelist needs no tracking and is never refused for room.
	if err := g.Update(Config{MaxConnectionsPerIP: 1, Whitelist: []string{"198.18.0.0/16"}}); err != nil {
		t.Fatal(err)
	}
	admit(oldIdle, Allowed)
}

func TestRemoteBanBounded(t *testing.T) {
	g, c := newGuard(t, Config{})
	a := ip("203.0.113.5")
	g.Ban(a, -time.Hour)
	g.Ban(a, 0)
	if g.Entries() != 0 {
		t.Fatal("a non-positive ban created state")
	}
	g.Ban(a, time.Duration(1<<62))
	if err := g.Update(Config{MaxConnectionsPerIP: 10}); err != nil {
		t.Fatal(err)
	}
	if _, r := g.Admit(a); r != Banned {
		t.Fatalf("%v", r)
	}
	c.add(maxRemoteBan + time.Second)
	if _, r := g.Admit(a); r != Allowed {
		t.Fatalf("remote ban not capped: %v", r)
	}
	g.Ban(ip("2001:db8:5:6::1"), time.Minute)
	if _, r := g.Admit(ip("2001:db8:5:6::99")); r != Banned {
		t.Fatalf("ban of an IPv6 host does not cover its /64: %v", r)
	}
}
