package protoplex

import (
	"context"
	"github.com/darkit/protoplex/internal/testnet"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/darkit/protoplex/protocols"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHealthProbes: live answers at once; ready only while serving, not
// before listening and not while draining.
func TestHealthProbes(t *testing.T) {
	pm := NewProtocolManager(WithLogger(discardLogger()), WithGracefulShutdownTimeout(time.Minute))
	pm.AddProtocol(protocols.NewSSHProtocol(testnet.Banner(t, "x")))
	addr, err := pm.ServeHealth("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pm.Close()
	if code, _ := get(t, "http://"+addr+"/health/live"); code != 200 {
		t.Fatalf("live = %d", code)
	}
	if code, body := get(t, "http://"+addr+"/health/ready"); code != 503 {
		t.Fatalf("ready before listening = %d %s", code, body)
	}
	ln := testnet.Listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pm.Serve(ctx, ln) }()
	waitFor(t, func() bool { code, _ := get(t, "http://"+addr+"/health/ready"); return code == 200 })

	// Hold a connection so the drain lasts; readiness must drop meanwhile.
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return pm.GetMetrics().ActiveConnections == 1 })
	cancel()
	waitFor(t, pm.Draining)
	if code, body := get(t, "http://"+addr+"/health/ready"); code != 503 || body != "draining\n" {
		t.Fatalf("ready while draining = %d %q", code, body)
	}
	c.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestReloadMetrics: a valid and an invalid file reload move the counters.
func TestReloadMetrics(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	writeConfig(t, path, "127.0.0.1:1")
	cm, err := NewConfigManager(path)
	if err != nil {
		t.Fatal(err)
	}
	defer cm.Close()
	pm := NewProtocolManagerWithConfig(cm, WithLogger(discardLogger()))
	defer pm.Close()
	if err := pm.Err(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, []byte("protocols: [\n"), 0o644)
	if err := cm.Reload(); err == nil {
		t.Fatal("invalid file accepted")
	}
	writeConfig(t, path, "127.0.0.1:2")
	if err := cm.Reload(); err != nil {
		t.Fatal(err)
	}
	m := scrape(t, pm)
	// Success: the initial apply plus the reload (the file watcher may add more).
	if m["protoplex_config_reloads_total{result=failure}"] < 1 || m["protoplex_config_reloads_total{result=success}"] < 2 {
		t.Fatalf("reload counters: %v / %v", m["protoplex_config_reloads_total{result=success}"], m["protoplex_config_reloads_total{result=failure}"])
	}
	if got := pm.Protocols()[0].Target; got != "127.0.0.1:2" {
		t.Fatalf("target after reload = %s", got)
	}
}
