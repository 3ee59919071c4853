//go:build unix

package main

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// TestReadiness: the instance stays ready while one protocol's backends are
// all down (the others can still be served), says which in
// /health/ready?verbose, and turns unready only when no protocol can be
// served.
func TestReadiness(t *testing.T) {
	up, dead := testnet.Banner(t, "A:"), testnet.FreeAddr(t) // nothing listens on dead
	dir := t.TempDir()
	cfg := filepath.Join(dir, "protoplex.yaml")
	check := `    health_check: {interval: "100ms", timeout: "200ms", fall: 1, rise: 1}` + "\n"
	conf := func(ssh, http string) string {
		return fmt.Sprintf("server:\n  listen: \"127.0.0.1:0\"\nprotocols:\n  - name: SSH\n    target: %q\n%s  - name: HTTP\n    target: %q\n%smonitoring:\n  metrics_port: 0\n  health_check_port: %d\n",
			ssh, check, http, check, testnet.FreePort(t))
	}
	testnet.WriteFile(t, cfg, conf(dead, up))
	p := start(t, "-config", cfg)
	health := "http://" + p.waitLine(t, `^health:\s+http://(\S+)/health/live`)[1]
	p.waitLine(t, `^listening: `)

	ready := func(query string) (int, string) {
		resp, err := http.Get(health + "/health/ready" + query)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	const oneDown = "ok\nroute SSH: 0/1 targets up\nroute HTTP: 1/1 targets up\n"
	var code int
	var body string
	testnet.Eventually(t, 10*time.Second, func() bool { code, body = ready("?verbose"); return body == oneDown },
		"%s", testnet.Later(func() string { return fmt.Sprintf("verbose readiness %d %q, want 200 %q", code, body, oneDown) }))
	if code != http.StatusOK {
		t.Fatalf("one protocol down: %d %q, want 200: the instance still serves HTTP", code, body)
	}
	if code, body := ready(""); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("/health/ready without verbose: %d %q, want 200 \"ok\\n\"", code, body)
	}
	if code, body := ready("?verbose=1"); code != http.StatusOK || body != oneDown {
		t.Fatalf("?verbose=1: %d %q", code, body)
	}

	// Every protocol's targets down: nothing can be served.
	testnet.WriteFile(t, cfg, conf(dead, dead))
	p.Cmd.Process.Signal(syscall.SIGHUP)
	testnet.Eventually(t, 10*time.Second, func() bool { code, body = ready("?verbose"); return code == http.StatusServiceUnavailable },
		"%s", testnet.Later(func() string {
			return fmt.Sprintf("all down: readiness %d %q, want 503; stderr:\n%s", code, body, p.Out)
		}))
	if !strings.HasPrefix(body, "no protocol has a healthy target\n") || !strings.Contains(body, "route HTTP: 0/1 targets up\n") {
		t.Fatalf("all down: %q", body)
	}
}
