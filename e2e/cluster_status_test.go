package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/darkit/protoplex/internal/cluster"
	"github.com/darkit/protoplex/internal/testnet"
)

// TestClusterStatusKeysGoWithNodes: protoplex processes in cluster mode
// with a shared configuration each write /protoplex/status/<node>; one
// that is killed (no deregistration) loses its key once its lease_ttl
// lapses, one stopped with SIGTERM revokes it at once (its lease_ttl is
// far longer than the wait), so nodes that come and go with new ids leave
// no status key behind.
func TestClusterStatusKeysGoWithNodes(t *testing.T) {
	etcd := testnet.StartEtcd(t)
	bin := buildCLI(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd.Client}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	ctx := context.Background()
	// The shared configuration replaces the file's, server block included:
	// it keeps each node on an ephemeral loopback port.
	shared := "server:\n  listen: \"127.0.0.1:0\"\nmonitoring:\n  metrics_port: 0\n  health_check_port: 0\nprotocols:\n  - name: HTTP\n    target: \"127.0.0.1:1\"\n"
	if _, err := cli.Put(ctx, "/protoplex/config", shared); err != nil {
		t.Fatal(err)
	}
	status := func(id string) (string, bool) {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		r, err := cli.Get(cctx, cluster.StatusPrefix+id)
		if err != nil || len(r.Kvs) == 0 {
			return "", false
		}
		return string(r.Kvs[0].Value), true
	}
	start := func(id, ttl string) *testnet.Process {
		cfg := filepath.Join(t.TempDir(), id+".yaml")
		testnet.WriteFile(t, cfg, fmt.Sprintf(`server:
  listen: "127.0.0.1:0"
protocols:
  - name: SSH
    target: "127.0.0.1:1"
monitoring:
  metrics_port: 0
  health_check_port: 0
distributed:
  enable: true
  node_id: %q
  etcd_endpoints: [%q]
  lease_ttl: %q
  config_manager: {enable: true}
`, id, etcd.Client, ttl))
		cmd := exec.Command(bin, "-config", cfg)
		stdout := &testnet.Buffer{}
		cmd.Stdout = stdout
		p := testnet.StartProcess(t, cmd)
		listening := regexp.MustCompile(`(?m)^listening: \S+`)
		testnet.Eventually(t, 20*time.Second, func() bool { return listening.MatchString(stdout.String()) },
			"node %s never listened; stdout:\n%s\nstderr:\n%s", id, testnet.Later(stdout.String), testnet.Later(p.Out.String))
		waitUntil(t, "node "+id+" reported the shared configuration applied", func() bool { v, ok := status(id); return ok && v == "ok" })
		return p
	}
	killed := start("status-killed", "2s")
	stopped := start("status-stopped", "60s")

	killed.Stop() // SIGKILL: no revoke
	began := time.Now()
	waitUntil(t, "the killed node's status key went with its lease", func() bool { _, ok := status("status-killed"); return !ok })
	t.Logf("killed node's status key gone after %v (lease_ttl 2s)", time.Since(began).Round(10*time.Millisecond))
	if _, ok := status("status-stopped"); !ok {
		t.Fatal("a live node's status key went")
	}

	if err := stopped.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stopped.Exited():
	case <-time.After(30 * time.Second):
		t.Fatalf("no exit after SIGTERM:\n%s", stopped.Out)
	}
	// Within 20 s, far within its 60 s lease: only the revoke can take it.
	waitUntil(t, "a node stopped with SIGTERM revoked its status key", func() bool { _, ok := status("status-stopped"); return !ok })
}
