package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/darkit/protoplex/internal/cluster"
	"github.com/darkit/protoplex/internal/testnet"
)

// load sends SSH banners through one node, 20 connections a second, each
// a real TCP connection to the backend etcd names, and counts the ones that
// did not reach a backend.
type load struct {
	addr       string
	ok, failed atomic.Int64
	mu         sync.Mutex
	last       string // the last failed reply
	stop       chan struct{}
	done       chan struct{}
}

func startLoad(addr string) *load {
	l := &load{addr: addr, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
			reply, err := testnet.RoundTrip(l.addr, "SSH-2.0-x\r\n")
			if strings.HasPrefix(reply, "svc-") {
				l.ok.Add(1)
				continue
			}
			l.failed.Add(1)
			l.mu.Lock()
			l.last = fmt.Sprintf("%q (%v)", reply, err)
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *load) halt() { close(l.stop); <-l.done }

// TestClusterChurn: 3 etcd members, 4 protoplex nodes (the binary), real
// connections through every node while nodes are killed (SIGKILL), an etcd
// member dies, the backend moves, quorum is lost and comes back. No
// connection through a node that is alive fails, and every node logs the
// loss of etcd and its return.
func TestClusterChurn(t *testing.T) {
	members := testnet.StartEtcdCluster(t, 3)
	var endpoints []string
	for _, m := range members {
		endpoints = append(endpoints, m.Client)
	}
	bin := buildCLI(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	move := func(to string) { // the one ssh instance now points at a new backend
		t.Helper()
		backend := testnet.Banner(t, to)
		var err error
		testnet.Eventually(t, 20*time.Second, func() bool { // a write may time out while etcd elects a new leader
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			err = cluster.Register(ctx, cli, cluster.Service{Protocol: "ssh", Instance: "a", Address: backend}, 0)
			return err == nil
		}, "registering %s: %v", to, testnet.Later(func() string { return fmt.Sprint(err) }))
	}
	move("svc-1:")

	dir := t.TempDir()
	type node struct {
		addr string
		p    *testnet.Process
		l    *load
	}
	var nodes []*node
	for i := 0; i < 4; i++ {
		cfg := filepath.Join(dir, fmt.Sprintf("node%d.yaml", i))
		testnet.WriteFile(t, cfg, fmt.Sprintf(`server:
  listen: "127.0.0.1:0"
protocols:
  - name: SSH
    target: []
monitoring:
  metrics_port: 0
  health_check_port: 0
distributed:
  enable: true
  node_id: "churn-%d"
  etcd_endpoints: ["%s"]
  lease_ttl: "2s"
  state_file: %q
  service_discovery: {enable: true}
`, i, strings.Join(endpoints, `", "`), filepath.Join(dir, fmt.Sprintf("state%d.json", i))))
		addr, p, _ := startCLI(t, bin, "-config", cfg)
		nodes = append(nodes, &node{addr: addr, p: p, l: startLoad(addr)})
	}
	alive := nodes
	kill := func(i int) { // SIGKILL, its load stopped first: it is no longer a survivor
		nodes[i].l.halt()
		nodes[i].p.Stop()
		alive = without(alive, nodes[i])
	}
	// serving waits until every live node has served n more connections.
	serving := func(n int64, what string) {
		t.Helper()
		base := map[*node]int64{}
		for _, nd := range alive {
			base[nd] = nd.l.ok.Load()
		}
		for _, nd := range alive {
			testnet.Eventually(t, 20*time.Second, func() bool { return nd.l.ok.Load() >= base[nd]+n }, "%s: node %s stopped serving", what, nd.addr)
		}
	}
	converged := func(prefix string) {
		t.Helper()
		for _, nd := range alive {
			testnet.Eventually(t, 20*time.Second, func() bool { return strings.HasPrefix(exchangeWith(nd.addr, "SSH-2.0-x\r\n"), prefix) },
				"node %s never routed to %s", nd.addr, prefix)
		}
	}
	logged := func(msg string, n int) {
		t.Helper()
		for _, nd := range alive {
			testnet.Eventually(t, 20*time.Second, func() bool { return strings.Count(nd.p.Out.String(), msg) >= n },
				"node %s never logged %q %d times:\n%s", nd.addr, msg, n, testnet.Later(nd.p.Out.String))
		}
	}
	serving(10, "start")

	kill(3)
	serving(10, "a node killed")

	members[0].Stop()
	move("svc-2:")
	converged("svc-2:")
	serving(10, "an etcd member lost")

	kill(2)
	members[1].Stop() // 1 of 3 left: no quorum
	logged("etcd disconnected", 1)
	serving(100, "quorum lost") // about 5 s without quorum

	members[0].Start()
	members[1].Start()
	logged("etcd connected", 2)
	move("svc-3:")
	converged("svc-3:")
	serving(10, "quorum back")

	for _, nd := range alive {
		nd.l.halt()
	}
	for i, nd := range nodes {
		nd.l.mu.Lock()
		t.Logf("node %d: %d connections served, %d failed %s", i, nd.l.ok.Load(), nd.l.failed.Load(), nd.l.last)
		if nd.l.failed.Load() != 0 {
			t.Errorf("node %d: %d connections failed while it was alive, the last %s", i, nd.l.failed.Load(), nd.l.last)
		}
		nd.l.mu.Unlock()
	}
}

// without returns ns without n.
func without[T comparable](ns []T, n T) []T {
	var out []T
	for _, x := range ns {
		if x != n {
			out = append(out, x)
		}
	}
	return out
}
