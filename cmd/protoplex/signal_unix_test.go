//go:build unix

package main

// The tests that reload and stop the process with SIGHUP and SIGTERM, or
// make a FIFO: Unix only.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// openStream opens a connection through addr that the backend answering
// with prefix serves, and keeps it open until the test ends.
func openStream(t *testing.T, addr, prefix string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	io.WriteString(c, "SSH-2.0-long\r\n")
	r := bufio.NewReader(c)
	if l, _ := r.ReadString('\n'); l != prefix+"SSH-2.0-long\r\n" {
		t.Fatalf("stream through %s: %q, want %sSSH-2.0-long", addr, l, prefix)
	}
	return c, r
}

// TestReloadAndDrain runs the real binary: SIGHUP applies an edited file to
// new connections while an established one keeps its backend; an invalid
// edit is rejected and the running config keeps serving; SIGTERM drains.
func TestReloadAndDrain(t *testing.T) {
	a, b := testnet.Banner(t, "A:"), testnet.Banner(t, "B:")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "protoplex.yaml")
	conf := func(target string) string {
		return fmt.Sprintf("server:\n  listen: \"127.0.0.1:0\"\n  graceful_shutdown_timeout: \"10s\"\nprotocols:\n  - name: SSH\n    target: %q\nmonitoring:\n  metrics_port: 0\n  health_check_port: 0\n", target)
	}
	testnet.WriteFile(t, cfg, conf(a))
	p := start(t, "-config", cfg)
	addr := p.waitLine(t, `^listening: (\S+)`)[1]

	long, _ := openStream(t, addr, "A:") // established on backend A

	testnet.WriteFile(t, cfg, conf(b))
	p.Cmd.Process.Signal(syscall.SIGHUP)
	testnet.Eventually(t, 10*time.Second, func() bool { return ask(addr, "SSH-2.0-new\r\n") == "B:SSH-2.0-new\r\n" },
		"reload not applied; stderr:\n%s", p.Out)

	// Invalid edit: rejected, B keeps serving.
	testnet.WriteFile(t, cfg, "protocols:\n  - name: SSH\n    target: \"nope\"\n")
	p.Cmd.Process.Signal(syscall.SIGHUP)
	testnet.Eventually(t, 10*time.Second, p.logged("protoplex.yaml:3"), "invalid reload not reported with file:line; stderr:\n%s", p.Out)
	if got := ask(addr, "SSH-2.0-after\r\n"); got != "B:SSH-2.0-after\r\n" {
		t.Fatalf("after invalid reload: %q", got)
	}
	// Truncated (`: > file`): rejected with the reason, the listener stays
	// where it is (an accepted empty file would rebind it to :9090), B serves.
	testnet.WriteFile(t, cfg, "")
	p.Cmd.Process.Signal(syscall.SIGHUP)
	testnet.Eventually(t, 10*time.Second, p.logged("protoplex.yaml:1: no protocols"), "truncated file not reported; stderr:\n%s", p.Out)
	if got := ask(addr, "SSH-2.0-empty\r\n"); got != "B:SSH-2.0-empty\r\n" {
		t.Fatalf("after truncated reload: %q", got)
	}

	// SIGTERM: the long stream, still on A, is drained (not cut) and the
	// process exits once it ends.
	p.Cmd.Process.Signal(syscall.SIGTERM)
	testnet.Eventually(t, 10*time.Second, p.logged("draining"), "no drain; stderr:\n%s", p.Out)
	io.WriteString(long, "still here\n")
	long.(*net.TCPConn).CloseWrite()
	select {
	case <-p.Exited():
		if err := p.Wait(); err != nil {
			t.Fatalf("exit: %v; stderr:\n%s", err, p.Out)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("did not exit after the drained stream ended")
	}
}

// TestListenRebind: changing server.listen opens the new address and closes
// the old one, while a connection accepted on the old one keeps streaming.
func TestListenRebind(t *testing.T) {
	be := testnet.Banner(t, "A:")
	first, second := testnet.FreeAddr(t), testnet.FreeAddr(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "protoplex.yaml")
	conf := func(listen string) string {
		return fmt.Sprintf("server:\n  listen: %q\nprotocols:\n  - name: SSH\n    target: %q\nmonitoring:\n  metrics_port: 0\n  health_check_port: 0\n", listen, be)
	}
	testnet.WriteFile(t, cfg, conf(first))
	p := start(t, "-config", cfg)
	p.waitLine(t, `^listening: `)
	long, lr := openStream(t, first, "A:")
	testnet.WriteFile(t, cfg, conf(second))
	p.Cmd.Process.Signal(syscall.SIGHUP)
	testnet.Eventually(t, 10*time.Second, func() bool { return testnet.Listening(second) }, "new address never listened; stderr:\n%s", p.Out)
	testnet.Eventually(t, 10*time.Second, func() bool { return !testnet.Listening(first) }, "old address still listening")
	if got := ask(second, "SSH-2.0-new\r\n"); got != "A:SSH-2.0-new\r\n" {
		t.Fatalf("via new address: %q", got)
	}
	// The connection accepted on the old address still streams both ways.
	io.WriteString(long, "more\n")
	if l, err := lr.ReadString('\n'); err != nil || l != "more\n" {
		t.Fatalf("old stream after rebind: %q %v", l, err)
	}
	select {
	case <-p.Exited():
		t.Fatalf("process exited; stderr:\n%s", p.Out)
	default:
	}
}

// TestReloadRejectedWhenListenBindFails: a reload that changes a route and
// moves the listener to an address another socket holds is rejected whole:
// the old route keeps serving on the old listener, the failure is logged
// and counted, not counted as a success; a later valid change applies.
func TestReloadRejectedWhenListenBindFails(t *testing.T) {
	a, b := testnet.Banner(t, "A:"), testnet.Banner(t, "B:")
	taken := testnet.Listen(t)
	first, second := testnet.FreeAddr(t), testnet.FreeAddr(t)
	metricsPort := testnet.FreePort(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "protoplex.yaml")
	conf := func(listen, target string) string {
		return fmt.Sprintf("server:\n  listen: %q\nprotocols:\n  - name: SSH\n    target: %q\nmonitoring:\n  metrics_port: %d\n  health_check_port: 0\n", listen, target, metricsPort)
	}
	testnet.WriteFile(t, cfg, conf(first, a))
	p := start(t, "-config", cfg)
	metrics := "http://" + p.waitLine(t, `^metrics:\s+http://(\S+)/metrics`)[1] + "/metrics"
	p.waitLine(t, `^listening: `)
	if got := ask(first, "SSH-2.0-before\r\n"); got != "A:SSH-2.0-before\r\n" {
		t.Fatalf("before: %q", got)
	}
	const success, failure = `protoplex_config_reloads_total{result="success"}`, `protoplex_config_reloads_total{result="failure"}`
	successes, failures := testnet.Metric(t, metrics, success), testnet.Metric(t, metrics, failure)

	testnet.WriteFile(t, cfg, conf(taken.Addr().String(), b))
	p.Cmd.Process.Signal(syscall.SIGHUP)
	testnet.Eventually(t, 10*time.Second, p.logged("address already in use"), "bind failure not logged; stderr:\n%s", p.Out)
	if got := ask(first, "SSH-2.0-after\r\n"); got != "A:SSH-2.0-after\r\n" {
		t.Fatalf("after the failed reload the old listener serves %q, want the old route A", got)
	}
	if !strings.Contains(p.Out.String(), "configuration rejected") {
		t.Fatalf("the reload is not reported as rejected; stderr:\n%s", p.Out)
	}
	if s, f := testnet.Metric(t, metrics, success), testnet.Metric(t, metrics, failure); s != successes || f != failures+1 {
		t.Fatalf("reloads: success %v → %v, failure %v → %v; want success unchanged, one more failure", successes, s, failures, f)
	}

	testnet.WriteFile(t, cfg, conf(second, b))
	p.Cmd.Process.Signal(syscall.SIGHUP)
	testnet.Eventually(t, 10*time.Second, func() bool { return testnet.Listening(second) },
		"a valid change after the failure was not applied; stderr:\n%s", p.Out)
	if got := ask(second, "SSH-2.0-new\r\n"); got != "B:SSH-2.0-new\r\n" {
		t.Fatalf("via the new address: %q", got)
	}
}

// TestMonitoringChangeWarned: a reload that changes monitoring or logging
// keys applies its routes and names the keys that need a restart.
func TestMonitoringChangeWarned(t *testing.T) {
	a, b := testnet.Banner(t, "A:"), testnet.Banner(t, "B:")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "protoplex.yaml")
	conf := func(target string, port int) string {
		return fmt.Sprintf("server:\n  listen: \"127.0.0.1:0\"\nprotocols:\n  - name: SSH\n    target: %q\nmonitoring:\n  metrics_port: 0\n  health_check_port: %d\n", target, port)
	}
	testnet.WriteFile(t, cfg, conf(a, 0))
	p := start(t, "-config", cfg)
	addr := p.waitLine(t, `^listening: (\S+)`)[1]
	testnet.WriteFile(t, cfg, conf(b, testnet.FreePort(t)))
	p.Cmd.Process.Signal(syscall.SIGHUP)
	testnet.Eventually(t, 10*time.Second, p.logged("monitoring.health_check_port"),
		"no warning naming monitoring.health_check_port; stderr:\n%s", p.Out)
	if got := ask(addr, "SSH-2.0-new\r\n"); got != "B:SSH-2.0-new\r\n" {
		t.Fatalf("routes of the reload: %q", got)
	}
}

// TestCheckFIFO: -check on a FIFO fails at once instead of waiting in open().
func TestCheckFIFO(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "config.yaml")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skip("mkfifo:", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, "-check", "-config", fifo).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatal("-check on a FIFO blocked")
	}
	if err == nil || !strings.Contains(string(out), "not a regular file (a FIFO): refused") {
		t.Fatalf("-check on a FIFO: %v: %s", err, out)
	}
}
