package cluster

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/darkit/protoplex/internal/testnet"
)

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// recorder keeps what the handlers were told.
type recorder struct {
	mu       sync.Mutex
	services int // Services calls
	last     map[string][]Service
	nodes    int
	bans     map[netip.Addr]time.Duration
	unbans   []netip.Addr
	configs  []string
}

func (r *recorder) handlers() Handlers {
	return Handlers{
		Services: func(m map[string][]Service) { r.mu.Lock(); r.services++; r.last = m; r.mu.Unlock() },
		Nodes:    func([]NodeInfo) { r.mu.Lock(); r.nodes++; r.mu.Unlock() },
		Ban: func(ip netip.Addr, d time.Duration) {
			r.mu.Lock()
			if r.bans == nil {
				r.bans = map[netip.Addr]time.Duration{}
			}
			r.bans[ip] = d
			r.mu.Unlock()
		},
		Unban:  func(ip netip.Addr) { r.mu.Lock(); r.unbans = append(r.unbans, ip); r.mu.Unlock() },
		Config: func(y []byte) error { r.mu.Lock(); r.configs = append(r.configs, string(y)); r.mu.Unlock(); return nil },
	}
}

func (r *recorder) read(f func(r *recorder)) { r.mu.Lock(); defer r.mu.Unlock(); f(r) }

func startNode(t *testing.T, opt Options, r *recorder) *Node {
	t.Helper()
	if opt.NodeID == "" {
		opt.NodeID = "n1"
	}
	if opt.Logger == nil {
		opt.Logger = quiet()
	}
	n, err := Start(context.Background(), opt, r.handlers())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func register(t *testing.T, cli *clientv3.Client, inst, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := Register(ctx, cli, Service{Protocol: "ssh", Instance: inst, Address: addr}, 0); err != nil {
		t.Fatal(err)
	}
}

// TestStartAppliesFirstRead: Start returns once the state read from etcd
// has been handed over, so a node never serves its file configuration
// without the discovered backends and the shared configuration.
func TestStartAppliesFirstRead(t *testing.T) {
	endpoint := testnet.StartEtcd(t).Client
	cli := etcdClient(t, endpoint)
	for _, inst := range []string{"a", "b", "c", "d"} {
		register(t, cli, inst, "127.0.0.1:1")
	}
	if _, err := cli.Put(context.Background(), "/protoplex/config", "shared"); err != nil {
		t.Fatal(err)
	}
	r := &recorder{}
	n := startNode(t, Options{Endpoints: []string{endpoint}, ConfigKey: "/protoplex/config"}, r)
	if got := n.ServiceCount(); got != 4 {
		t.Fatalf("%d services known when Start returned, want 4", got)
	}
	r.read(func(r *recorder) {
		if len(r.last["ssh"]) != 4 || len(r.configs) != 1 || r.configs[0] != "shared" {
			t.Fatalf("handlers told %d services and configs %q when Start returned", len(r.last["ssh"]), r.configs)
		}
	})
	if n.LastSync().IsZero() || !n.Connected() {
		t.Fatal("not connected after Start")
	}
}

// TestBanLastsWhatRemains: a node that reads a ban key after it was
// published (a restart) bans for what remains of the key's lease, not for
// the whole duration from the time it reads it.
func TestBanLastsWhatRemains(t *testing.T) {
	endpoint := testnet.StartEtcd(t).Client
	cli := etcdClient(t, endpoint)
	ctx := context.Background()
	lease, err := cli.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr("192.0.2.9")
	if _, err := cli.Put(ctx, BansPrefix+ip.String(), "30s", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	var left int64
	testnet.Eventually(t, 15*time.Second, func() bool {
		r, err := cli.TimeToLive(ctx, lease.ID)
		left = r.TTL
		return err == nil && r.TTL <= 28
	}, "the ban's lease never ran down")
	r := &recorder{}
	startNode(t, Options{Endpoints: []string{endpoint}}, r)
	r.read(func(r *recorder) {
		if d := r.bans[ip]; d <= 0 || d > time.Duration(left)*time.Second {
			t.Fatalf("banned for %v when %ds of the lease remained", d, left)
		}
	})
}

// TestBanEndsWithItsKey: a ban key deleted by an operator, or whose lease
// ends, lifts the ban on every node.
func TestBanEndsWithItsKey(t *testing.T) {
	endpoint := testnet.StartEtcd(t).Client
	cli := etcdClient(t, endpoint)
	r := &recorder{}
	n := startNode(t, Options{Endpoints: []string{endpoint}}, r)
	deleted, expiring := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::1")
	if err := n.PublishBan(deleted, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := n.PublishBan(expiring, time.Second); err != nil {
		t.Fatal(err)
	}
	unbanned := func(ip netip.Addr) func() bool {
		return func() bool {
			var ok bool
			r.read(func(r *recorder) {
				for _, u := range r.unbans {
					ok = ok || u == ip
				}
			})
			return ok
		}
	}
	testnet.Eventually(t, 10*time.Second, func() bool {
		var ok bool
		r.read(func(r *recorder) { ok = r.bans[deleted] == time.Hour })
		return ok
	}, "the published ban never reached the node")
	if _, err := cli.Delete(context.Background(), BansPrefix+deleted.String()); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, unbanned(deleted), "deleting the ban key did not unban")
	testnet.Eventually(t, 15*time.Second, unbanned(expiring), "the ban's lease ended and it was not lifted")
}

// TestConnectionChangesLogged: every change of the etcd session is logged
// once: a lease revoked (the node registers again), and a partition longer
// than the lease (the node is cut off from etcd, which stays up). The log
// alternates "etcd connected" and "etcd disconnected", starting connected.
func TestConnectionChangesLogged(t *testing.T) {
	endpoint := testnet.StartEtcd(t).Client
	cli := etcdClient(t, endpoint)
	proxy := testnet.CutProxy(t, endpoint)
	logs := &testnet.Buffer{}
	n := startNode(t, Options{Endpoints: []string{proxy.Addr}, LeaseTTL: 2 * time.Second, Logger: slog.New(slog.NewTextHandler(logs, nil))}, &recorder{})
	// changes is the sequence of session changes logged: true connected.
	changes := func() []bool {
		var out []bool
		for _, line := range strings.Split(logs.String(), "\n") {
			switch {
			case strings.Contains(line, `msg="etcd connected"`):
				out = append(out, true)
			case strings.Contains(line, `msg="etcd disconnected`):
				out = append(out, false)
			}
		}
		for i, up := range out {
			if up != (i%2 == 0) {
				t.Fatalf("change %d logged twice in a row:\n%s", i, logs)
			}
		}
		return out
	}
	// reconnected waits until the log shows more than n changes and ends
	// connected.
	reconnected := func(n int, what string) int {
		t.Helper()
		var got []bool
		testnet.Eventually(t, 15*time.Second, func() bool { got = changes(); return len(got) > n && got[len(got)-1] }, "%s not logged:\n%s", what, testnet.Later(logs.String))
		return len(got)
	}
	seen := reconnected(0, "start")

	// The lease revoked: the keep-alive ends, the node registers again.
	resp, err := cli.Get(context.Background(), NodesPrefix+"n1")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("node key: %v", err)
	}
	if _, err := cli.Revoke(context.Background(), clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	seen = reconnected(seen, "re-registration")

	// Cut off from etcd for longer than the lease.
	cut := time.Now()
	proxy.Cut()
	testnet.Eventually(t, 15*time.Second, func() bool { return !n.Connected() }, "the partition was never noticed")
	t.Logf("partition noticed after %v (lease_ttl 2s)", time.Since(cut).Round(10*time.Millisecond))
	testnet.Eventually(t, 15*time.Second, func() bool {
		r, err := cli.Get(context.Background(), NodesPrefix+"n1", clientv3.WithCountOnly())
		return err == nil && r.Count == 0
	}, "the node's lease never lapsed")
	proxy.Restore()
	reconnected(seen, "reconnection")
	testnet.Eventually(t, 10*time.Second, func() bool {
		r, err := cli.Get(context.Background(), NodesPrefix+"n1", clientv3.WithCountOnly())
		return err == nil && r.Count == 1
	}, "the node did not register again")
}

// TestWatchResumes: after a partition the node resumes its watch from the
// last revision it saw, without reading everything again, and hands over
// only what changed; only when etcd compacted those revisions meanwhile
// does it read everything again.
func TestWatchResumes(t *testing.T) {
	endpoint := testnet.StartEtcd(t).Client
	cli := etcdClient(t, endpoint)
	proxy := testnet.CutProxy(t, endpoint)
	register(t, cli, "a", "127.0.0.1:1")
	r := &recorder{}
	n := startNode(t, Options{Endpoints: []string{proxy.Addr}, LeaseTTL: 2 * time.Second}, r)
	partition := func(meanwhile func()) {
		t.Helper()
		proxy.Cut()
		testnet.Eventually(t, 15*time.Second, func() bool { return !n.Connected() }, "the partition was never noticed")
		meanwhile()
		proxy.Restore()
		testnet.Eventually(t, 15*time.Second, n.Connected, "never reconnected")
	}
	services := func(want int) {
		t.Helper()
		testnet.Eventually(t, 10*time.Second, func() bool { return n.ServiceCount() == want }, "%d services, want %d", n.ServiceCount(), want)
	}
	partition(func() { register(t, cli, "b", "127.0.0.1:2") })
	services(2)
	if s := n.snapshots.Load(); s != 1 {
		t.Fatalf("%d full reads after a partition, want 1 (the one at start)", s)
	}
	r.read(func(r *recorder) {
		if r.services != 2 {
			t.Fatalf("Services called %d times for 2 states", r.services)
		}
	})

	partition(func() {
		register(t, cli, "c", "127.0.0.1:3")
		ctx := context.Background()
		if _, err := cli.Delete(ctx, ServicesPrefix+"ssh/a"); err != nil {
			t.Fatal(err)
		}
		resp, err := cli.Put(ctx, "/protoplex/other", "x")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
			t.Fatal(err)
		}
	})
	testnet.Eventually(t, 10*time.Second, func() bool { return n.snapshots.Load() == 2 }, "no full read after a compaction")
	services(2)
	r.read(func(r *recorder) {
		if r.services != 3 || len(r.last["ssh"]) != 2 || r.last["ssh"][0].Instance != "b" || r.last["ssh"][1].Instance != "c" {
			t.Fatalf("after the compaction: %d Services calls, last %v", r.services, r.last)
		}
	})
}

// TestStartFromSavedState: a node started while etcd is down serves the
// state it saved last; without a saved state it fails, as before. Once
// etcd answers, it reads everything.
func TestStartFromSavedState(t *testing.T) {
	etcd := testnet.StartEtcd(t)
	cli := etcdClient(t, etcd.Client)
	register(t, cli, "a", "127.0.0.1:1")
	if _, err := cli.Put(context.Background(), "/protoplex/config", "shared"); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "state.json")
	opt := Options{Endpoints: []string{etcd.Client}, ConfigKey: "/protoplex/config", StateFile: file, StartTimeout: time.Second, LeaseTTL: 2 * time.Second}
	first := startNode(t, opt, &recorder{})
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("no state saved: %v", err)
	}
	first.Close()
	etcd.Stop()

	opt.NodeID = "n2"
	if _, err := Start(context.Background(), Options{NodeID: "n3", Endpoints: opt.Endpoints, StartTimeout: time.Second, Logger: quiet()}, Handlers{}); err == nil ||
		!strings.Contains(err.Error(), "etcd unreachable at start") {
		t.Fatalf("no saved state, etcd down: %v", err)
	}
	logs := &testnet.Buffer{}
	opt.Logger = slog.New(slog.NewTextHandler(logs, nil))
	r := &recorder{}
	n := startNode(t, opt, r)
	r.read(func(r *recorder) {
		if len(r.last["ssh"]) != 1 || r.last["ssh"][0].Address != "127.0.0.1:1" || len(r.configs) != 1 || r.configs[0] != "shared" {
			t.Fatalf("started with services %v and configs %q", r.last, r.configs)
		}
	})
	if !strings.Contains(logs.String(), "etcd unreachable at start: serving the state saved before") || !n.LastSync().IsZero() || n.SavedAt().IsZero() {
		t.Fatalf("start from the saved state not said:\n%s", logs)
	}
	etcd.Start()
	testnet.Eventually(t, 20*time.Second, n.Connected, "never connected once etcd was back")
	if n.snapshots.Load() != 1 {
		t.Fatalf("%d full reads, want 1", n.snapshots.Load())
	}
	r.read(func(r *recorder) {
		if r.services != 1 || len(r.configs) != 1 {
			t.Fatalf("the first read re-notified what the saved state held: %d Services calls, configs %q", r.services, r.configs)
		}
	})
}

// TestStateFileBounded: a state file over MaxStateBytes is refused before
// it is read whole.
func TestStateFileBounded(t *testing.T) {
	file := filepath.Join(t.TempDir(), "state.json")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(MaxStateBytes + 10); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := loadState(file); err == nil || !strings.Contains(err.Error(), "over") {
		t.Fatalf("oversized state file: %v", err)
	}
}

// TestBackoffResets: while etcd is away the wait between attempts grows to
// its cap (lease_ttl/3 here); after a session that connected, the next
// wait starts from the minimum again instead of staying at the cap.
func TestBackoffResets(t *testing.T) {
	etcd := testnet.StartEtcd(t)
	cli := etcdClient(t, etcd.Client)
	n := startNode(t, Options{Endpoints: []string{etcd.Client}, LeaseTTL: 2 * time.Second}, &recorder{})
	capped := nextBackoff(maxBackoff, false, 2*time.Second)
	etcd.Stop()
	testnet.Eventually(t, 30*time.Second, func() bool { return time.Duration(n.backoff.Load()) == capped }, "the back-off never reached %v", capped)
	etcd.Start()
	testnet.Eventually(t, 20*time.Second, n.Connected, "never reconnected")
	// End the connected session: its lease revoked.
	resp, err := cli.Get(context.Background(), NodesPrefix+"n1")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("node key: %v", err)
	}
	if _, err := cli.Revoke(context.Background(), clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return time.Duration(n.backoff.Load()) == minBackoff },
		"the back-off stayed at %v after a session that connected", testnet.Later(func() string { return time.Duration(n.backoff.Load()).String() }))
}
