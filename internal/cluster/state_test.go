package cluster

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func svc(proto, inst, addr string, rev int64) event {
	return event{Key: ServicesPrefix + proto + "/" + inst, Value: []byte(fmt.Sprintf(`{"address":%q}`, addr)), ModRev: rev}
}

// TestApplyNotifiesOnlyChanges: the reducer reports a change only when the
// state changed: a key rewritten with what it held, a deletion of an
// unknown key or a configuration already applied change nothing.
func TestApplyNotifiesOnlyChanges(t *testing.T) {
	s := newState("/protoplex/config")
	ip := netip.MustParseAddr("192.0.2.1")
	steps := []struct {
		name string
		evs  []event
		want string // %+v of the changes, Config as a string
	}{
		{"new service", []event{svc("ssh", "a", "h:1", 2)}, "services"},
		{"same service rewritten", []event{svc("ssh", "a", "h:1", 3)}, ""},
		{"service moved", []event{svc("ssh", "a", "h:2", 4)}, "services"},
		{"unknown service deleted", []event{{Delete: true, Key: ServicesPrefix + "ssh/zz", ModRev: 5}}, ""},
		{"malformed service", []event{{Key: ServicesPrefix + "ssh/b", Value: []byte("{"), ModRev: 6}}, "malformed"},
		{"node joins", []event{{Key: NodesPrefix + "n1", Value: []byte(`{"id":"n1","started":"2026-01-01T00:00:00Z"}`), ModRev: 7}}, "nodes"},
		{"node rewritten", []event{{Key: NodesPrefix + "n1", Value: []byte(`{"id":"n1","started":"2026-01-01T00:00:00Z"}`), ModRev: 8}}, ""},
		{"ban", []event{{Key: BansPrefix + ip.String(), Value: []byte("15s"), ModRev: 9, Lease: 77}}, "ban 192.0.2.1 15s lease 77"},
		{"same ban read again", []event{{Key: BansPrefix + ip.String(), Value: []byte("15s"), ModRev: 9, Lease: 77}}, ""},
		{"ban key deleted", []event{{Delete: true, Key: BansPrefix + ip.String(), ModRev: 10}}, "unban 192.0.2.1"},
		{"config", []event{{Key: "/protoplex/config", Value: []byte("a"), ModRev: 11}}, "config a"},
		{"config read again", []event{{Key: "/protoplex/config", Value: []byte("a"), ModRev: 11}}, ""},
		{"config deleted", []event{{Delete: true, Key: "/protoplex/config", ModRev: 12}}, ""},
		{"status key", []event{{Key: StatusPrefix + "n1", Value: []byte("ok"), ModRev: 13}}, ""},
		{"service gone", []event{{Delete: true, Key: ServicesPrefix + "ssh/a", ModRev: 14}}, "services"},
	}
	for _, st := range steps {
		if got := describe(s.apply(st.evs)); got != st.want {
			t.Errorf("%s: changes %q, want %q", st.name, got, st.want)
		}
	}
}

// TestReplaceDiffs: a full read replaces the state and reports only what
// differs: the same snapshot twice changes nothing; a ban gone from it is
// lifted; a service gone from it is a change.
func TestReplaceDiffs(t *testing.T) {
	s := newState("/protoplex/config")
	snap := []event{
		svc("ssh", "a", "h:1", 2),
		{Key: NodesPrefix + "n1", Value: []byte(`{"id":"n1"}`), ModRev: 3},
		{Key: BansPrefix + "192.0.2.1", Value: []byte("1m"), ModRev: 4, Lease: 5},
		{Key: "/protoplex/config", Value: []byte("c"), ModRev: 6},
	}
	if got, want := describe(s.replace(snap)), "services nodes ban 192.0.2.1 1m0s lease 5 config c"; got != want {
		t.Fatalf("first read: %q, want %q", got, want)
	}
	if got := describe(s.replace(snap)); got != "" {
		t.Fatalf("the same read again: %q, want no change", got)
	}
	if got, want := describe(s.replace(snap[:2])), "unban 192.0.2.1"; got != want {
		t.Fatalf("ban gone: %q, want %q", got, want)
	}
	if got, want := describe(s.replace(snap[1:2])), "services"; got != want {
		t.Fatalf("service gone: %q, want %q", got, want)
	}
}

// TestBansBounded: bans past MaxBans are ignored, counted.
func TestBansBounded(t *testing.T) {
	s := newState("")
	var evs []event
	for i := 0; i < MaxBans+5; i++ {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		evs = append(evs, event{Key: BansPrefix + ip.String(), Value: []byte("1m"), ModRev: int64(i + 1)})
	}
	c := s.apply(evs)
	if len(s.bans) != MaxBans || c.Ignored != 5 {
		t.Fatalf("%d bans tracked, %d ignored; want %d and 5", len(s.bans), c.Ignored, MaxBans)
	}
}

// TestNextBackoff: the wait doubles while the node fails to connect, is
// capped by lease_ttl/3 (a node reconnects before its lease lapses) and
// by 5 s, and starts over after a session that connected.
func TestNextBackoff(t *testing.T) {
	b := minBackoff
	var got []time.Duration
	for i := 0; i < 8; i++ {
		b = nextBackoff(b, false, 10*time.Second)
		got = append(got, b)
	}
	if fmt.Sprint(got) != "[200ms 400ms 800ms 1.6s 3.2s 3.333333333s 3.333333333s 3.333333333s]" {
		t.Fatalf("back-off %v", got)
	}
	if b = nextBackoff(b, true, 10*time.Second); b != minBackoff {
		t.Fatalf("after a connected session %v, want %v", b, minBackoff)
	}
	if b = nextBackoff(4*time.Second, false, time.Hour); b != maxBackoff {
		t.Fatalf("long lease: %v, want %v", b, maxBackoff)
	}
	if b = nextBackoff(400*time.Millisecond, false, time.Second); b != 333*time.Millisecond+333333 {
		t.Fatalf("1s lease: %v", b)
	}
}

func describe(c changes) string {
	var out []string
	if c.Services {
		out = append(out, "services")
	}
	if c.Nodes {
		out = append(out, "nodes")
	}
	for _, b := range c.Bans {
		if b.Unban {
			out = append(out, "unban "+b.IP.String())
		} else {
			out = append(out, fmt.Sprintf("ban %s %v lease %d", b.IP, b.D, b.Lease))
		}
	}
	if c.Config != nil {
		out = append(out, "config "+string(c.Config))
	}
	if c.Malformed > 0 {
		out = append(out, "malformed")
	}
	s := fmt.Sprint(out)
	return s[1 : len(s)-1]
}
