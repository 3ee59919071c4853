//go:build unix

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

// TestDrainExitsAtDeadline: on SIGTERM with a stream held open on the data
// port and a client holding the health port mid-request (half a header, as
// a stuck probe does), the process exits at graceful_shutdown_timeout, not
// a monitoring server's grace later.
func TestDrainExitsAtDeadline(t *testing.T) {
	const deadline = time.Second
	be := testnet.Banner(t, "A:")
	cfg := filepath.Join(t.TempDir(), "protoplex.yaml")
	testnet.WriteFile(t, cfg, fmt.Sprintf("server:\n  listen: \"127.0.0.1:0\"\n  graceful_shutdown_timeout: %q\nprotocols:\n  - name: SSH\n    target: %q\nmonitoring:\n  metrics_port: %d\n  health_check_port: %d\n",
		deadline, be, testnet.FreePort(t), testnet.FreePort(t)))
	p := start(t, "-config", cfg)
	health := p.waitLine(t, `^health:\s+http://(\S+)/health/live`)[1]
	metrics := p.waitLine(t, `^metrics:\s+http://(\S+)/metrics`)[1]
	addr := p.waitLine(t, `^listening: (\S+)`)[1]
	openStream(t, addr, "A:") // never closed by the client
	for _, a := range []string{health, metrics} {
		c, err := net.Dial("tcp", a)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		io.WriteString(c, "GET /health/ready HTTP/1.1\r\n") // the header never ends
	}

	begin := time.Now()
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.Exited():
	case <-time.After(deadline + 10*time.Second):
		t.Fatalf("no exit %v after SIGTERM; stderr:\n%s", deadline+10*time.Second, p.Out)
	}
	took := time.Since(begin)
	t.Logf("SIGTERM to exit: %v (graceful_shutdown_timeout %v)", took, deadline)
	if err := p.Wait(); err != nil {
		t.Fatalf("exit: %v; stderr:\n%s", err, p.Out)
	}
	if took < deadline-50*time.Millisecond || took > deadline+500*time.Millisecond {
		t.Fatalf("SIGTERM to exit took %v, want the drain deadline %v (at most 500 ms more); stderr:\n%s", took, deadline, p.Out)
	}
}
