package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// buildCLI builds cmd/protoplex into the test's temp dir.
func buildCLI(t *testing.T) string {
	t.Helper()
	return buildCmd(t, "cmd/protoplex")
}

// buildCmd builds the command in dir (relative to the repository root,
// e.g. "bench/loadgen") into the test's temp dir and returns its path.
func buildCmd(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(dir))
	if out, err := exec.Command("go", "build", "-o", bin, "../"+dir).CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", dir, err, out)
	}
	return bin
}

// TestCLIClusterNode: the operator sub-commands against a real etcd, and a
// protoplex process in distributed mode that is killed (no deregistration):
// its lease expires and it leaves the membership.
func TestCLIClusterNode(t *testing.T) {
	etcd := testnet.StartEtcd(t)
	bin := buildCLI(t)
	backend := testnet.Banner(t, "registered:")
	op := func(args ...string) string {
		t.Helper()
		out, err := run(t, 20*time.Second, bin, append(args[:1:1], append([]string{"-etcd", etcd.Client}, args[1:]...)...)...)
		if err != nil {
			t.Fatalf("protoplex %v: %v\n%s", args, err, out)
		}
		return out
	}
	op("register", "-protocol", "ssh", "-instance", "a", "-address", backend)
	if out := op("services"); !strings.Contains(out, "ssh/a ") || !strings.Contains(out, backend) {
		t.Fatalf("services: %q", out)
	}

	cfg := filepath.Join(t.TempDir(), "node.yaml")
	testnet.WriteFile(t, cfg, fmt.Sprintf(`server:
  listen: "127.0.0.1:0"
protocols:
  - name: HTTP
    target: "127.0.0.1:1"
monitoring:
  metrics_port: 0
  health_check_port: 0
distributed:
  enable: true
  node_id: "cli-node"
  etcd_endpoints: [%q]
  lease_ttl: "2s"
  service_discovery: {enable: true, refresh_interval: 30}
`, etcd.Client))
	cmd := exec.Command(bin, "-config", cfg)
	stdout := &testnet.Buffer{}
	cmd.Stdout = stdout
	node := testnet.StartProcess(t, cmd)
	listening := regexp.MustCompile(`(?m)^listening: (\S+)`)
	var addr string
	testnet.Eventually(t, 20*time.Second, func() bool {
		if m := listening.FindStringSubmatch(stdout.String()); m != nil {
			addr = m[1]
		}
		return addr != ""
	}, "node never listened; stderr:\n%s", node.Out)
	waitUntil(t, "the node routes the registered backend", func() bool {
		return strings.HasPrefix(exchangeWith(addr, "SSH-2.0-x\r\n"), "registered:")
	})
	if out := op("nodes"); !strings.Contains(out, "cli-node ") {
		t.Fatalf("nodes: %q", out)
	}

	// Crash: killed, no chance to deregister. The lease (2s) expires.
	node.Stop()
	start := time.Now()
	waitUntil(t, "the killed node left the membership", func() bool { return !strings.Contains(op("nodes"), "cli-node ") })
	t.Logf("killed node left the membership after %v", time.Since(start).Round(10*time.Millisecond))

	op("deregister", "-protocol", "ssh", "-instance", "a")
	if out := op("services"); strings.Contains(out, "ssh/a") {
		t.Fatalf("still registered: %q", out)
	}
}

// TestCLIClusterStart: a protocol whose targets all come from etcd
// (target: []) passes -check and starts, and -check refuses it outside
// cluster mode. The node serves the discovered backend from its first
// connection and its banner counts it. Killed, then started again while
// etcd is down, it serves from the state it saved, and says so in its log
// and its readiness detail.
func TestCLIClusterStart(t *testing.T) {
	etcd := testnet.StartEtcd(t)
	bin := buildCLI(t)
	backend := testnet.Banner(t, "discovered:")
	if out, err := run(t, 20*time.Second, bin, "register", "-etcd", etcd.Client, "-protocol", "ssh", "-instance", "a", "-address", backend); err != nil {
		t.Fatalf("register: %v\n%s", err, out)
	}
	dir := t.TempDir()
	alone := filepath.Join(dir, "alone.yaml")
	testnet.WriteFile(t, alone, "protocols:\n  - name: SSH\n    target: []\n")
	if out, err := run(t, 20*time.Second, bin, "-check", "-config", alone); err == nil || !strings.Contains(out, "target: [] (targets from etcd only) needs distributed.enable") {
		t.Fatalf("-check of target: [] outside cluster mode: %v\n%s", err, out)
	}
	health := testnet.FreeAddr(t)
	_, healthPort, _ := strings.Cut(health, ":")
	cfg := filepath.Join(dir, "node.yaml")
	testnet.WriteFile(t, cfg, fmt.Sprintf(`server:
  listen: "127.0.0.1:0"
protocols:
  - name: SSH
    target: []
monitoring:
  metrics_port: 0
  enable_health_check: true
  health_check_port: %s
distributed:
  enable: true
  node_id: "start-node"
  etcd_endpoints: [%q]
  lease_ttl: "2s"
  start_timeout: "2s"
  state_file: %q
  service_discovery: {enable: true}
`, healthPort, etcd.Client, filepath.Join(dir, "state.json")))
	if out, err := run(t, 20*time.Second, bin, "-check", "-config", cfg); err != nil {
		t.Fatalf("-check of a discovery-only protocol: %v\n%s", err, out)
	}
	addr, node, stdout := startCLI(t, bin, "-config", cfg)
	if !strings.Contains(stdout.String(), "1 services discovered") {
		t.Fatalf("banner:\n%s", stdout)
	}
	if got := exchangeWith(addr, "SSH-2.0-x\r\n"); !strings.HasPrefix(got, "discovered:") {
		t.Fatalf("first connection got %q, want the discovered backend", got)
	}
	node.Stop()
	etcd.Stop()

	addr, node, _ = startCLI(t, bin, "-config", cfg)
	if got := exchangeWith(addr, "SSH-2.0-x\r\n"); !strings.HasPrefix(got, "discovered:") {
		t.Fatalf("started without etcd: got %q, want the saved backend", got)
	}
	if !strings.Contains(node.Out.String(), "etcd unreachable at start: serving the state saved before") {
		t.Fatalf("log:\n%s", node.Out)
	}
	resp, err := http.Get("http://" + health + "/health/ready?verbose")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "cluster: etcd unreachable since start: serving the state saved at") {
		t.Fatalf("readiness: %s", body)
	}
}
