//go:build linux

package main

import (
	"fmt"
	"io"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// stuckBackend is testnet.StuckAddr: a dial to it waits for its timeout.
func stuckBackend(t *testing.T) string {
	t.Helper()
	addr, ok := testnet.StuckAddr(t)
	if !ok {
		t.Skip("the kernel kept accepting into a backlog-0 queue: no way to make a dial hang here")
	}
	return addr
}

// TestDrainCancelsDial: a connection whose backend dial is in progress at
// the drain deadline does not hold the exit until dial_timeout.
func TestDrainCancelsDial(t *testing.T) {
	const deadline = time.Second
	cfg := filepath.Join(t.TempDir(), "protoplex.yaml")
	testnet.WriteFile(t, cfg, fmt.Sprintf("server:\n  listen: \"127.0.0.1:0\"\n  graceful_shutdown_timeout: %q\n  dial_timeout: \"20s\"\nprotocols:\n  - name: SSH\n    target: %q\nmonitoring:\n  metrics_port: %d\n  health_check_port: 0\n",
		deadline, stuckBackend(t), testnet.FreePort(t)))
	p := start(t, "-config", cfg)
	metrics := "http://" + p.waitLine(t, `^metrics:\s+http://(\S+)/metrics`)[1] + "/metrics"
	addr := p.waitLine(t, `^listening: (\S+)`)[1]
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "SSH-2.0-x\r\n") // identified: the dial starts and hangs
	testnet.Eventually(t, 10*time.Second, func() bool {
		return testnet.Metric(t, metrics, `protoplex_identified_total{protocol="SSH",route="SSH"}`) == 1
	},
		"the connection was not identified; stderr:\n%s", p.Out)

	begin := time.Now()
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.Exited():
	case <-time.After(30 * time.Second):
		t.Fatalf("no exit after SIGTERM; stderr:\n%s", p.Out)
	}
	took := time.Since(begin)
	t.Logf("SIGTERM to exit with a dial in progress: %v (graceful_shutdown_timeout %v, dial_timeout 20s)", took, deadline)
	if took > deadline+500*time.Millisecond {
		t.Fatalf("SIGTERM to exit took %v, want the drain deadline %v (at most 500 ms more); stderr:\n%s", took, deadline, p.Out)
	}
}
