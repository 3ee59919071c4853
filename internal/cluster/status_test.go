package cluster

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/darkit/protoplex/internal/testnet"
)

// statusKey returns the value and lease of node id's status key ("", 0,
// false when there is none).
func statusKey(t *testing.T, cli *clientv3.Client, id string) (string, clientv3.LeaseID, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := cli.Get(ctx, StatusPrefix+id)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Kvs) == 0 {
		return "", 0, false
	}
	return string(r.Kvs[0].Value), clientv3.LeaseID(r.Kvs[0].Lease), true
}

// crash stops n as a killed process would: no revoke, its lease left to
// lapse.
func crash(n *Node) {
	n.cancel()
	<-n.done
	n.cli.Close()
}

// TestStatusKeyGoesWithNode: a node's status key lives under its lease. A
// node that dies without closing loses it within its lease_ttl while a
// live node's stays; a node that closes revokes it at once; a node whose
// lease was lost writes it again under its new one. Under churn (pods with
// random ids) the status prefix holds the live nodes only.
func TestStatusKeyGoesWithNode(t *testing.T) {
	endpoint := testnet.StartEtcd(t).Client
	cli := etcdClient(t, endpoint)
	if _, err := cli.Put(context.Background(), "/protoplex/config", "shared"); err != nil {
		t.Fatal(err)
	}
	start := func(id string, ttl time.Duration) *Node {
		n, err := Start(context.Background(), Options{NodeID: id, Endpoints: []string{endpoint}, ConfigKey: "/protoplex/config",
			LeaseTTL: ttl, Logger: quiet()}, (&recorder{}).handlers())
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	written := func(id string) clientv3.LeaseID {
		t.Helper()
		var lease clientv3.LeaseID
		testnet.Eventually(t, 15*time.Second, func() bool {
			v, l, ok := statusKey(t, cli, id)
			lease = l
			return ok && v == "ok"
		}, "node %s wrote no status", id)
		if lease == 0 {
			t.Fatalf("node %s's status key has no lease: it would outlive the node", id)
		}
		return lease
	}
	// The live and the closing node have leases far longer than the test
	// waits, so that only a revoke, not a lapse, can take their keys.
	live := start("live", time.Minute)
	t.Cleanup(func() { live.Close() })
	closing := start("closing", time.Minute)
	crashed := start("crashed", 2*time.Second)
	lost := start("lost", 2*time.Second)
	t.Cleanup(func() { lost.Close() })
	for _, id := range []string{"live", "closing", "crashed", "lost"} {
		written(id)
	}

	closing.Close()
	testnet.Eventually(t, 10*time.Second, func() bool { // far within its lease: only the revoke can take it
		_, _, ok := statusKey(t, cli, "closing")
		return !ok
	}, "a closed node's status key is still there: its lease was not revoked")

	crash(crashed)
	testnet.Eventually(t, 20*time.Second, func() bool {
		_, _, ok := statusKey(t, cli, "crashed")
		return !ok
	}, "a crashed node's status key outlived its 2s lease")
	if _, _, ok := statusKey(t, cli, "live"); !ok {
		t.Fatal("a live node's status key went")
	}

	// A node's lease lost (revoked behind its back, as a lapse during a
	// partition would): it registers again and writes its status again,
	// under the new lease.
	old := written("lost")
	if _, err := cli.Revoke(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 20*time.Second, func() bool {
		v, l, ok := statusKey(t, cli, "lost")
		return ok && v == "ok" && l != 0 && l != old
	}, "the status key was not written again under the node's new lease")
}

// TestStatusBounded: a status longer than MaxStatusBytes (a rejected
// configuration's error quoting it) is cut, at a character boundary,
// marked; a short one is kept whole.
func TestStatusBounded(t *testing.T) {
	if got := boundStatus("ok"); got != "ok" {
		t.Errorf("boundStatus(ok) = %q", got)
	}
	for _, long := range []string{strings.Repeat("x", 1<<20), "rejected: " + strings.Repeat("é", MaxStatusBytes)} {
		got := boundStatus(long)
		if len(got) > MaxStatusBytes || !utf8.ValidString(got) || !strings.HasSuffix(got, "…") || !strings.HasPrefix(long, strings.TrimSuffix(got, "…")) {
			t.Errorf("boundStatus of %d bytes: %d bytes, valid %v, %q…", len(long), len(got), utf8.ValidString(got), got[:20])
		}
	}
	if got := boundStatus(strings.Repeat("y", MaxStatusBytes)); len(got) != MaxStatusBytes || strings.HasSuffix(got, "…") {
		t.Errorf("a status of exactly MaxStatusBytes was cut")
	}
}

// TestStatusPrefixUnderChurn: nodes that come with fresh ids and die
// without closing (pods replaced, autoscaling) leave the status prefix
// holding the live nodes' keys only, however many came and went.
func TestStatusPrefixUnderChurn(t *testing.T) {
	endpoint := testnet.StartEtcd(t).Client
	cli := etcdClient(t, endpoint)
	if _, err := cli.Put(context.Background(), "/protoplex/config", "shared"); err != nil {
		t.Fatal(err)
	}
	start := func(id string, ttl time.Duration) *Node {
		n, err := Start(context.Background(), Options{NodeID: id, Endpoints: []string{endpoint}, ConfigKey: "/protoplex/config",
			LeaseTTL: ttl, Logger: quiet()}, (&recorder{}).handlers())
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	count := func() int64 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := cli.Get(ctx, StatusPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return r.Count
	}
	live := start("steady", time.Minute)
	t.Cleanup(func() { live.Close() })
	const churned = 12
	for i := range churned {
		id := fmt.Sprintf("pod-%d-%x", i, time.Now().UnixNano())
		n := start(id, 2*time.Second)
		testnet.Eventually(t, 15*time.Second, func() bool { _, _, ok := statusKey(t, cli, id); return ok }, "%s wrote no status", id)
		crash(n)
	}
	testnet.Eventually(t, 30*time.Second, func() bool { return count() == 1 }, "the status prefix kept the keys of %d nodes that died", churned)
	if _, _, ok := statusKey(t, cli, "steady"); !ok {
		t.Fatal("the live node's status key went")
	}
}
