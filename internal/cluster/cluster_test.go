package cluster

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/darkit/protoplex/internal/testnet"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func etcdClient(t testing.TB, endpoint string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: nopZap()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// putAll writes kvs in transactions of etcd's default maximum of 128 ops.
func putAll(t *testing.T, cli *clientv3.Client, kvs map[string]string) {
	t.Helper()
	var ops []clientv3.Op
	flush := func() {
		if len(ops) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
		ops = ops[:0]
	}
	for k, v := range kvs {
		ops = append(ops, clientv3.OpPut(k, v))
		if len(ops) == 128 {
			flush()
		}
	}
	flush()
}

// TestDiscoveryBounded: instances past MaxServicesPerProtocol, protocols
// past MaxProtocols and nodes past MaxNodes are ignored, in the snapshot and
// from the watch; an update of a tracked instance still applies.
func TestDiscoveryBounded(t *testing.T) {
	endpoint := testnet.StartEtcd(t).Client
	cli := etcdClient(t, endpoint)
	kvs := map[string]string{}
	for i := 0; i < MaxServicesPerProtocol+3; i++ {
		kvs[fmt.Sprintf("%sssh/i%05d", ServicesPrefix, i)] = fmt.Sprintf(`{"address":"127.0.0.1:%d"}`, 10000+i)
	}
	for i := 0; i < MaxProtocols+2; i++ { // sorted after ssh, so ssh is tracked
		kvs[fmt.Sprintf("%sz%05d/only", ServicesPrefix, i)] = `{"address":"127.0.0.1:1"}`
	}
	for i := 0; i < MaxNodes+2; i++ { // sorted after n1, so this node is tracked
		kvs[fmt.Sprintf("%so%05d", NodesPrefix, i)] = `{"id":"other"}`
	}
	putAll(t, cli, kvs)

	snaps := make(chan map[string][]Service, 16)
	n, err := Start(context.Background(), Options{NodeID: "n1", Endpoints: []string{endpoint}, Logger: quiet()},
		Handlers{Services: func(m map[string][]Service) { snaps <- m }})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	next := func() map[string][]Service {
		t.Helper()
		select {
		case m := <-snaps:
			return m
		case <-time.After(15 * time.Second):
			t.Fatal("no services snapshot")
			return nil
		}
	}
	m := next()
	if len(m) > MaxProtocols {
		t.Fatalf("%d protocols tracked, at most %d", len(m), MaxProtocols)
	}
	if got := len(m["ssh"]); got != MaxServicesPerProtocol {
		t.Fatalf("%d ssh instances tracked, want %d", got, MaxServicesPerProtocol)
	}
	if nodes := n.Nodes(); len(nodes) != MaxNodes || nodes[0].ID != "n1" {
		t.Fatalf("%d nodes tracked (first %q), want %d with this one", len(nodes), nodes[0].ID, MaxNodes)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A new instance from the watch is ignored; a tracked one's update applies.
	if _, err := cli.Put(ctx, ServicesPrefix+"ssh/zzz-new", `{"address":"127.0.0.1:2"}`); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, ServicesPrefix+"ssh/i00000", `{"address":"127.0.0.1:3"}`); err != nil {
		t.Fatal(err)
	}
	for {
		m = next()
		if len(m["ssh"]) != MaxServicesPerProtocol {
			t.Fatalf("%d ssh instances after the watch, want %d", len(m["ssh"]), MaxServicesPerProtocol)
		}
		for _, s := range m["ssh"] {
			if s.Instance == "zzz-new" {
				t.Fatal("instance past the bound tracked")
			}
		}
		if m["ssh"][0].Address == "127.0.0.1:3" {
			break
		}
	}
}

// TestSnapshotResponseBounded: a snapshot larger than MaxResponseBytes
// fails instead of being read whole (Start, with no saved state, fails).
func TestSnapshotResponseBounded(t *testing.T) {
	endpoint := testnet.StartEtcd(t).Client
	cli := etcdClient(t, endpoint)
	big := `{"address":"127.0.0.1:1","metadata":{"x":"` + strings.Repeat("x", 1<<20) + `"}}` // under etcd's default 1.5 MiB request limit
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := 0; i < MaxResponseBytes>>20+2; i++ {
		if _, err := cli.Put(ctx, fmt.Sprintf("%sbig/%03d", ServicesPrefix, i), big); err != nil {
			t.Fatal(err)
		}
	}
	_, err := Start(context.Background(), Options{NodeID: "n1", Endpoints: []string{endpoint}, Logger: quiet()}, Handlers{})
	if err == nil || !strings.Contains(err.Error(), "larger than max") {
		t.Fatalf("snapshot of %d MiB: %v, want a message-size error", MaxResponseBytes>>20+2, err)
	}
}
