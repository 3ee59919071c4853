package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/darkit/protoplex"
	"github.com/darkit/protoplex/internal/cluster"
	"github.com/darkit/protoplex/internal/testnet"
)

// TestDistributedNodes: three protoplex nodes and one etcd. A backend
// registered in etcd is routed by all three; configuration put in etcd is
// applied by all (a bad one rejected and reported); a closed node leaves the
// membership; with etcd down traffic keeps flowing; after etcd restarts,
// updates resume.
func TestDistributedNodes(t *testing.T) {
	etcd := testnet.StartEtcd(t)
	endpoints := []string{etcd.Client}
	quiet := slog.New(slog.DiscardHandler)
	base := func() *protoplex.Config {
		c, err := protoplex.ParseConfig([]byte("security:\n  ip_whitelist: [\"127.0.0.1\"]\n  enable_ddos_guard: true\n  ddos_guard: {failure_threshold: 3, window: \"1m\", ban_duration: \"1m\"}\nprotocols:\n  - name: HTTP\n    target: \"127.0.0.1:1\"\n"), "base.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var nodes []*protoplex.DistributedManager
	var addrs []string
	for i := 1; i <= 3; i++ {
		dm, err := protoplex.NewDistributedManager(protoplex.DistributedConfig{
			NodeID:           fmt.Sprintf("node-%d", i),
			EtcdEndpoints:    endpoints,
			ServiceDiscovery: protoplex.ServiceDiscoveryConfig{Enable: true, RefreshInterval: 30},
			LoadBalancer:     protoplex.LoadBalancerConfig{Strategy: "round_robin"},
			ConfigManager:    protoplex.ConfigManagerConfig{Enable: true, WatchPrefix: "/protoplex/config"},
			Config:           base(),
			LeaseTTL:         2 * time.Second,
			Options:          []protoplex.Option{protoplex.WithLogger(quiet)},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { dm.Close() })
		nodes = append(nodes, dm)
		addrs = append(addrs, serve(t, dm.Manager()))
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()

	// converge returns how long until every node answers want for send.
	converge := func(send, want string, on []string) time.Duration {
		t.Helper()
		start := time.Now()
		for _, a := range on {
			testnet.Eventually(t, 15*time.Second, func() bool { return strings.HasPrefix(exchangeWith(a, send), want) },
				"node %s never answered %q", a, want)
		}
		return time.Since(start)
	}

	// Membership.
	waitUntil(t, "3 nodes registered", func() bool { return nodeCount(cli) == 3 })

	// Service discovery: an SSH backend registered by an operator.
	var times []time.Duration
	const updates = 20
	for i := 0; i < updates; i++ {
		backend := testnet.Banner(t, fmt.Sprintf("svc-%d:", i))
		if err := cluster.Register(ctx, cli, cluster.Service{Protocol: "ssh", Instance: "only", Address: backend}, 0); err != nil {
			t.Fatal(err)
		}
		times = append(times, converge("SSH-2.0-x\r\n", fmt.Sprintf("svc-%d:", i), addrs))
	}
	slices.Sort(times)
	t.Logf("discovery convergence on 3 nodes over %d updates: p50 %v, max %v", len(times), times[len(times)/2], times[len(times)-1])
	if nodes[1].GetServiceCount() != 1 {
		t.Fatalf("service count %d", nodes[1].GetServiceCount())
	}
	rec := httptest.NewRecorder()
	nodes[1].Manager().MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{`protoplex_discovered_backends{protocol="ssh"} 1`, "protoplex_cluster_nodes 3", "protoplex_cluster_last_sync_age_seconds "} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Fatalf("metrics lack %q", want)
		}
	}
	checkClusterStatus(t, nodes[1].Manager(), "node-2")

	// Shared configuration put in etcd: HTTP goes to a real backend on every node.
	web := testnet.Banner(t, "web:")
	cfgYAML := fmt.Sprintf("security:\n  ip_whitelist: [\"127.0.0.1\"]\n  enable_ddos_guard: true\n  ddos_guard: {failure_threshold: 3, window: \"1m\", ban_duration: \"1m\"}\nprotocols:\n  - name: HTTP\n    target: %q\n", web)
	if _, err := cli.Put(ctx, "/protoplex/config", cfgYAML); err != nil {
		t.Fatal(err)
	}
	t.Logf("config convergence on 3 nodes: %v", converge("GET / HTTP/1.0\r\n\r\n", "web:", addrs))

	// A bad configuration is rejected on every node, reported, and HTTP keeps working.
	if _, err := cli.Put(ctx, "/protoplex/config", "protocols:\n  - name: HTTP\n    target: \"nope\"\n"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "every node reports the bad configuration rejected", func() bool {
		for i := 1; i <= 3; i++ {
			r, err := cli.Get(ctx, fmt.Sprintf("/protoplex/status/node-%d", i))
			if err != nil || len(r.Kvs) == 0 || !strings.Contains(string(r.Kvs[0].Value), "rejected") {
				return false
			}
		}
		return true
	})
	converge("GET / HTTP/1.0\r\n\r\n", "web:", addrs)

	// Shared bans: a source banned by node 1's DDoS guard is refused by node 2.
	// (127.0.0.1, the test's own polling, is whitelisted: its probes before
	// a route exists would otherwise get it banned, as they should.)
	for i := 0; i < 3; i++ {
		c, err := dialFrom("127.0.0.20", addrs[0])
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte{0xff, 0xfe, 0xfd})
		io.ReadAll(c)
		c.Close()
	}
	waitUntil(t, "node 2 refuses the source node 1 banned", func() bool { return exchange("127.0.0.20", addrs[1]) == "" })
	if got := exchange("127.0.0.21", addrs[1]); !strings.HasPrefix(got, "svc-19:") {
		t.Fatalf("another source refused: %q", got)
	}

	// A node that leaves disappears from the membership; the others route on.
	nodes[2].Close()
	waitUntil(t, "the closed node left the membership", func() bool { return nodeCount(cli) == 2 })
	converge("SSH-2.0-x\r\n", "svc-19:", addrs[:2])

	// etcd down: traffic keeps flowing with the last known state.
	etcd.Stop()
	waitUntil(t, "node 1 sees etcd down", func() bool { return !nodes[0].Connected() })
	converge("SSH-2.0-x\r\n", "svc-19:", addrs[:2])

	// etcd back: watches resume, a new registration reaches both nodes.
	etcd.Start()
	cli2, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli2.Close()
	after := testnet.Banner(t, "after-restart:")
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := cluster.Register(rctx, cli2, cluster.Service{Protocol: "ssh", Instance: "only", Address: after}, 0); err != nil {
		t.Fatal(err)
	}
	t.Logf("convergence after etcd restart: %v", converge("SSH-2.0-x\r\n", "after-restart:", addrs[:2]))
	waitUntil(t, "node 1 reconnected to etcd", func() bool { return nodes[0].Connected() })
}

// nodeCount is how many nodes are registered in etcd (-1 when it cannot
// be read).
func nodeCount(cli *clientv3.Client) int {
	r, err := cli.Get(context.Background(), cluster.NodesPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return -1
	}
	return int(r.Count)
}

// waitUntil polls cond for up to 20 s; what names the awaited state.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testnet.Eventually(t, 20*time.Second, cond, "%s", what)
}

// exchangeWith sends send through addr and returns the reply ("" when the
// connection fails).
func exchangeWith(addr, send string) string {
	reply, _ := testnet.RoundTrip(addr, send)
	return reply
}

// TestDistributedStaleness: a node cut off from etcd (etcd itself up) keeps
// serving, its protoplex_cluster_last_sync_age_seconds grows, and once it
// passes max_staleness the node turns unready, saying why; back in touch,
// it is ready again.
func TestDistributedStaleness(t *testing.T) {
	etcd := testnet.StartEtcd(t)
	proxy := testnet.CutProxy(t, etcd.Client)
	backend := testnet.Banner(t, "svc:")
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd.Client}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if err := cluster.Register(context.Background(), cli, cluster.Service{Protocol: "ssh", Instance: "a", Address: backend}, 0); err != nil {
		t.Fatal(err)
	}
	c, err := protoplex.ParseConfig([]byte("distributed:\n  enable: true\n  etcd_endpoints: [\""+proxy.Addr+"\"]\n  service_discovery: {enable: true}\nprotocols:\n  - name: SSH\n    target: []\n"), "node.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dc := protoplex.DistributedConfigFrom(c)
	dc.NodeID, dc.LeaseTTL, dc.MaxStaleness = "stale", 2*time.Second, 3*time.Second
	dc.Options = []protoplex.Option{protoplex.WithLogger(slog.New(slog.DiscardHandler))}
	dm, err := protoplex.NewDistributedManager(dc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dm.Close() })
	addr := serve(t, dm.Manager())
	ready := func() (bool, string) { return dm.Manager().Ready() }
	testnet.Eventually(t, 10*time.Second, func() bool { ok, _ := ready(); return ok }, "never ready")

	proxy.Cut()
	testnet.Eventually(t, 20*time.Second, func() bool {
		ok, why := ready()
		return !ok && strings.Contains(why, "over distributed.max_staleness (3s)")
	}, "a node cut off from etcd stayed ready: %v", testnet.Later(func() string { _, why := ready(); return why }))
	if got := exchangeWith(addr, "SSH-2.0-x\r\n"); !strings.HasPrefix(got, "svc:") {
		t.Fatalf("an unready node stopped serving: %q", got)
	}
	rec := httptest.NewRecorder()
	dm.Manager().MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	var age float64
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(line, "protoplex_cluster_last_sync_age_seconds "); ok {
			fmt.Sscan(v, &age)
		}
	}
	if age <= 3 {
		t.Fatalf("protoplex_cluster_last_sync_age_seconds %v once unready, want over 3", age)
	}

	proxy.Restore()
	testnet.Eventually(t, 20*time.Second, func() bool { ok, _ := ready(); return ok }, "not ready again once back in touch with etcd")
}

// TestDistributedSharedDiscoveryOnly: a configuration shared through etcd
// may list target: [] (it carries no distributed: block; the node's own
// discovery counts): every node applies it and routes that protocol to the
// backends etcd names.
func TestDistributedSharedDiscoveryOnly(t *testing.T) {
	etcd := testnet.StartEtcd(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd.Client}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	if err := cluster.Register(ctx, cli, cluster.Service{Protocol: "ssh", Instance: "a", Address: testnet.Banner(t, "svc:")}, 0); err != nil {
		t.Fatal(err)
	}
	base, err := protoplex.ParseConfig([]byte("protocols:\n  - name: HTTP\n    target: \"127.0.0.1:1\"\n"), "node.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dm, err := protoplex.NewDistributedManager(protoplex.DistributedConfig{
		NodeID: "shared", EtcdEndpoints: []string{etcd.Client}, Config: base,
		ServiceDiscovery: protoplex.ServiceDiscoveryConfig{Enable: true},
		ConfigManager:    protoplex.ConfigManagerConfig{Enable: true},
		Options:          []protoplex.Option{protoplex.WithLogger(slog.New(slog.DiscardHandler))},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dm.Close() })
	addr := serve(t, dm.Manager())
	if _, err := cli.Put(ctx, "/protoplex/config", "protocols:\n  - name: SSH\n    target: []\n"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the shared configuration reported applied", func() bool {
		r, err := cli.Get(ctx, cluster.StatusPrefix+"shared")
		return err == nil && len(r.Kvs) == 1 && string(r.Kvs[0].Value) == "ok"
	})
	if got := exchangeWith(addr, "SSH-2.0-x\r\n"); !strings.HasPrefix(got, "svc:") {
		t.Fatalf("SSH through the shared discovery-only protocol: %q", got)
	}
}
