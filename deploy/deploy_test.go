package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/darkit/protoplex"
	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/internal/udp/udptest"
)

var metricName = regexp.MustCompile(`protoplex_[a-z_]+`)

// distributedOnly metrics have values only in distributed mode; the e2e test
// TestDistributedNodes checks them on a live node.
var distributedOnly = map[string]bool{"protoplex_discovered_backends": true, "protoplex_cluster_last_sync_age_seconds": true}

// TestManifestsParse: every YAML document and the dashboard JSON parse.
func TestManifestsParse(t *testing.T) {
	files, _ := filepath.Glob("*.yml")
	more, _ := filepath.Glob("*/*.y*ml")
	cfgs, _ := filepath.Glob("*.yaml")
	for _, f := range append(append(files, more...), cfgs...) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var doc any
			if err := dec.Decode(&doc); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
		}
	}
	var dash map[string]any
	data, _ := os.ReadFile("grafana/protoplex-dashboard.json")
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	// protoplex's own config files are valid protoplex configs.
	for _, f := range []string{"config.yaml", "config-distributed.yaml"} {
		if err := protoplex.CheckConfigFile(f); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPromtool(t *testing.T) {
	promtool := testnet.RequireBinary(t, "promtool")
	// test rules: the alerts fire on the series their tests give.
	for _, args := range [][]string{{"check", "rules", "prometheus/alerts.yml"}, {"check", "config", "prometheus/prometheus.yml"},
		{"test", "rules", "prometheus/alerts_test.yml"}, {"test", "rules", "prometheus/cluster_alerts_test.yml"}} {
		if out, err := exec.Command(promtool, args...).CombinedOutput(); err != nil {
			t.Fatalf("promtool %v: %v\n%s", args, err, out)
		}
	}
}

// TestUsedMetricsExist: every metric the alerts and the dashboard use is
// exported by a running manager and documented.
func TestUsedMetricsExist(t *testing.T) {
	// Labelled metrics appear once they have a value: a route with health
	// checks (backend_up), one good connection, one garbage one and one to a dead backend, and one UDP
	// flow. Port 1 (tcpmux) is not served on loopback: the dial is refused.
	// A port freed by closing a listener could be taken again by a
	// concurrent test's bind(:0).
	const dead = "127.0.0.1:1"
	addr := testnet.FreeAddr(t)
	cfg, err := protoplex.ParseConfig([]byte(fmt.Sprintf("server:\n  listen: %q\n  listen_udp: %q\nprotocols:\n"+
		"  - name: SSH\n    target: %q\n    health_check: {interval: 1h}\n  - name: Redis\n    target: %q\n"+ // backend_up: checked targets only
		"  - name: game\n    transport: udp\n    match_start_bytes: [\"6964\"]\n    target: %q\n",
		addr, addr, testnet.Echo(t), dead, udptest.Echo(t, false))), "metrics.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pm := protoplex.NewProtocolManager(protoplex.WithLogger(slog.New(slog.DiscardHandler)))
	if err := pm.UpdateConfig(cfg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); pm.Close(); pm.Wait() })
	if err := pm.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, flight := range []string{"SSH-2.0-x\r\n", "\xff\xfe", "PING\r\n"} {
		testnet.RoundTrip(addr, flight)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return pm.GetMetrics().ActiveConnections == 0 }, "connections still open")
	udpExchange(t, addr)
	rec := httptest.NewRecorder()
	pm.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	exported := map[string]bool{}
	for _, m := range metricName.FindAllString(rec.Body.String(), -1) {
		exported[m] = true
	}
	doc, err := os.ReadFile("../docs/ARCHITECTURE.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range metricName.FindAllString(string(doc), -1) {
		documented[m] = true
	}
	var used []string
	for _, f := range []string{"prometheus/alerts.yml", "grafana/protoplex-dashboard.json"} {
		data, _ := os.ReadFile(f)
		used = append(used, metricName.FindAllString(string(data), -1)...)
	}
	if len(used) == 0 {
		t.Fatal("no metric found in alerts and dashboard")
	}
	for _, m := range used {
		base := m
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			base = strings.TrimSuffix(base, suffix)
		}
		if !exported[m] && !exported[base] && !distributedOnly[base] {
			t.Errorf("%s is used but not exported", m)
		}
		if !documented[base] {
			t.Errorf("%s is used but not in docs/ARCHITECTURE.md", base)
		}
	}
	// Every documented metric is exported too.
	for m := range documented {
		if !exported[m] && !exported[m+"_bucket"] && !distributedOnly[m] {
			t.Errorf("%s is documented but not exported", m)
		}
	}
}

// udpExchange sends one datagram of the "game" route to addr and waits for
// its echo, resending while none comes (UDP may drop).
func udpExchange(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	testnet.Eventually(t, 10*time.Second, func() bool {
		c.Write([]byte("id1"))
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := c.Read(buf)
		return err == nil && string(buf[:n]) == "id1"
	}, "no echo of a UDP datagram through %s", addr)
}
