package guard

import (
	"fmt"
	"testing"
	"time"
)

// TestUnbanAndListings: Unban lifts a ban of either kind (and for IPv6 the
// whole /64); Bans lists the banned sources with their reason and the time
// left, longest first, bounded, with the total; TopSources lists the
// sources holding the most connections, bounded.
func TestUnbanAndListings(t *testing.T) {
	g, c := newGuard(t, Config{EnableDDoSGuard: true, FailureThreshold: 1, Window: 10 * time.Second,
		BanDuration: 10 * time.Second, MaxBanDuration: time.Minute})
	local, remote := ip("198.51.100.1"), ip("2001:db8:1:2::5")
	g.IdentifyFailed(local)
	g.Ban(remote, 40*time.Second)
	for i := range 5 {
		g.Ban(ip(fmt.Sprintf("203.0.113.%d", i+1)), time.Duration(i+1)*time.Second)
	}
	c.add(time.Second)
	bans, total := g.Bans(3)
	if total != 6 || len(bans) != 3 { // 203.0.113.1's 1 s ban is over
		t.Fatalf("Bans(3) = %d listed of %d, want 3 of 6: %v", len(bans), total, bans)
	}
	if bans[0].Source != ip("2001:db8:1:2::") || bans[0].Reason != BanRemote || bans[0].Remaining != 39*time.Second {
		t.Fatalf("longest ban = %+v", bans[0])
	}
	if bans[1].Source != local || bans[1].Reason != BanIdentifyFailures || bans[1].Remaining != 9*time.Second {
		t.Fatalf("second ban = %+v", bans[1])
	}
	if !g.Unban(ip("2001:db8:1:2::99")) || !g.Unban(local) {
		t.Fatal("Unban found no ban")
	}
	if g.Unban(local) || g.Unban(ip("192.0.2.1")) {
		t.Fatal("Unban of a source not banned reported a ban")
	}
	for _, a := range []string{"198.51.100.1", "2001:db8:1:2::5"} {
		tk, r := g.Admit(ip(a))
		if r != Allowed {
			t.Fatalf("%s still refused after Unban: %v", a, r)
		}
		g.Release(tk)
	}
	if _, total := g.Bans(10); total != 4 {
		t.Fatalf("after two unbans %d banned, want 4", total)
	}

	var tickets []Ticket
	for i, n := range []int{3, 1, 5, 2} {
		for range n {
			tk, r := g.Admit(ip(fmt.Sprintf("192.0.2.%d", i+1)))
			if r != Allowed {
				t.Fatal(r)
			}
			tickets = append(tickets, tk)
		}
	}
	top := g.TopSources(2)
	if len(top) != 2 || top[0] != (SourceInfo{ip("192.0.2.3"), 5}) || top[1] != (SourceInfo{ip("192.0.2.1"), 3}) {
		t.Fatalf("TopSources(2) = %v", top)
	}
	for _, tk := range tickets {
		g.Release(tk)
	}
	if top := g.TopSources(2); len(top) != 0 {
		t.Fatalf("TopSources with no connection open = %v", top)
	}
}
