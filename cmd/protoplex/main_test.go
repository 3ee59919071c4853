package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// binary is the protoplex command built once for the subprocess tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "protoplex-cli")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "protoplex")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestVersion(t *testing.T) {
	out, err := exec.Command(binary, "-version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "protoplex ") {
		t.Fatalf("%v: %s", err, out)
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	writeFile(t, good, "server:\n  listen: \"127.0.0.1:0\"\nprotocols:\n  - name: SSH\n    target: \"127.0.0.1:22\"\n")
	out, err := exec.Command(binary, "-check", "-config", good).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("good config: %v: %s", err, out)
	}
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, "server:\n  listen: \"127.0.0.1:0\"\nprotocols:\n  - name: SSH\n    target: \"127.0.0.1:99999\"\n")
	out, err = exec.Command(binary, "-check", "-config", bad).CombinedOutput()
	if err == nil {
		t.Fatalf("bad config accepted: %s", out)
	}
	if !strings.Contains(string(out), "bad.yaml:5") {
		t.Fatalf("error does not name file:line: %s", out)
	}
	// Configs that would take the service down fail -check: no protocols
	// (an empty or truncated file), a pool that would exhaust memory, a port
	// that exists only at bind time.
	for name, content := range map[string]string{
		"empty.yaml":   "",
		"noroute.yaml": "protocols: []\n",
		"pool.yaml":    "protocols:\n  - name: SSH\n    target: \"127.0.0.1:22\"\n    pool: {min_idle: 2000000000}\n",
		"listen.yaml":  "server:\n  listen: \"127.0.0.1:99999\"\nprotocols:\n  - name: SSH\n    target: \"127.0.0.1:22\"\n",
	} {
		path := filepath.Join(dir, name)
		writeFile(t, path, content)
		out, err := exec.Command(binary, "-check", "-config", path).CombinedOutput()
		if err == nil || !strings.Contains(string(out), name+":") {
			t.Errorf("-check %s: %v: %s", name, err, out)
		}
	}
	// Starting with a bad config fails too, with the same precise error.
	cmd := exec.Command(binary, "-config", bad)
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "bad.yaml:5") {
		t.Fatalf("start with bad config: %v: %s", err, out)
	}
}

// proc is a running protoplex subprocess whose stdout lines are collected.
type proc struct {
	cmd   *exec.Cmd
	lines chan string
	out   *syncBuffer
}

// syncBuffer is a bytes.Buffer safe for the exec copier and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func start(t *testing.T, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary, args...)
	stdout, _ := cmd.StdoutPipe()
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, lines: make(chan string, 100), out: stderr}
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			p.lines <- s.Text()
		}
		close(p.lines)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return p
}

// waitLine returns the first stdout line matching re.
func (p *proc) waitLine(t *testing.T, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	timeout := time.After(15 * time.Second)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				t.Fatalf("process ended before %q; stderr:\n%s", re, p.out)
			}
			if m := rx.FindStringSubmatch(l); m != nil {
				return m
			}
		case <-timeout:
			t.Fatalf("no line %q within 15s; stderr:\n%s", re, p.out)
		}
	}
}

// backend answers the first line with name+line.
func backend(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				io.WriteString(c, name+":"+l)
				io.Copy(c, r) // then echo
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return ln.Addr().String()
}

func ask(t *testing.T, addr, line string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, line)
	reply, _ := bufio.NewReader(c).ReadString('\n')
	return reply
}

// TestReloadAndDrain runs the real binary: SIGHUP applies an edited file to
// new connections while an established one keeps its backend; an invalid
// edit is rejected and the running config keeps serving; SIGTERM drains.
func TestReloadAndDrain(t *testing.T) {
	a, b := backend(t, "A"), backend(t, "B")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "protoplex.yaml")
	conf := func(target string) string {
		return fmt.Sprintf("server:\n  listen: \"127.0.0.1:0\"\n  graceful_shutdown_timeout: \"10s\"\nprotocols:\n  - name: SSH\n    target: %q\nmonitoring:\n  metrics_port: 0\n  health_check_port: 0\n", target)
	}
	writeFile(t, cfg, conf(a))
	p := start(t, "-config", cfg)
	addr := p.waitLine(t, `^listening: (\S+)`)[1]

	// An established stream on backend A.
	long, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	io.WriteString(long, "SSH-2.0-long\r\n")
	lr := bufio.NewReader(long)
	if l, _ := lr.ReadString('\n'); l != "A:SSH-2.0-long\r\n" {
		t.Fatalf("long stream: %q", l)
	}

	writeFile(t, cfg, conf(b))
	p.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for ask(t, addr, "SSH-2.0-new\r\n") != "B:SSH-2.0-new\r\n" {
		if time.Now().After(deadline) {
			t.Fatalf("reload not applied; stderr:\n%s", p.out)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Invalid edit: rejected, B keeps serving.
	writeFile(t, cfg, "protocols:\n  - name: SSH\n    target: \"nope\"\n")
	p.cmd.Process.Signal(syscall.SIGHUP)
	for !strings.Contains(p.out.String(), "protoplex.yaml:3") {
		if time.Now().After(deadline.Add(5 * time.Second)) {
			t.Fatalf("invalid reload not reported with file:line; stderr:\n%s", p.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := ask(t, addr, "SSH-2.0-after\r\n"); got != "B:SSH-2.0-after\r\n" {
		t.Fatalf("after invalid reload: %q", got)
	}
	// Truncated (`: > file`): rejected with the reason, the listener stays
	// where it is (an accepted empty file would rebind it to :9090), B serves.
	writeFile(t, cfg, "")
	p.cmd.Process.Signal(syscall.SIGHUP)
	for !strings.Contains(p.out.String(), "protoplex.yaml:1: no protocols") {
		if time.Now().After(deadline.Add(5 * time.Second)) {
			t.Fatalf("truncated file not reported; stderr:\n%s", p.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := ask(t, addr, "SSH-2.0-empty\r\n"); got != "B:SSH-2.0-empty\r\n" {
		t.Fatalf("after truncated reload: %q", got)
	}

	// SIGTERM: the long stream, still on A, is drained (not cut) and the
	// process exits once it ends.
	p.cmd.Process.Signal(syscall.SIGTERM)
	for strings.Count(p.out.String(), "draining") == 0 {
		if time.Now().After(deadline.Add(10 * time.Second)) {
			t.Fatalf("no drain; stderr:\n%s", p.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	io.WriteString(long, "still here\n")
	long.(*net.TCPConn).CloseWrite()
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit: %v; stderr:\n%s", err, p.out)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("did not exit after the drained stream ended")
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", testnet.FreePort(t))
}

// TestListenRebind: changing server.listen opens the new address and closes
// the old one, while a connection accepted on the old one keeps streaming.
func TestListenRebind(t *testing.T) {
	be := backend(t, "A")
	first, second := freeAddr(t), freeAddr(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "protoplex.yaml")
	conf := func(listen string) string {
		return fmt.Sprintf("server:\n  listen: %q\nprotocols:\n  - name: SSH\n    target: %q\nmonitoring:\n  metrics_port: 0\n  health_check_port: 0\n", listen, be)
	}
	writeFile(t, cfg, conf(first))
	p := start(t, "-config", cfg)
	p.waitLine(t, `^listening: `)
	long, err := net.Dial("tcp", first)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	io.WriteString(long, "SSH-2.0-long\r\n")
	lr := bufio.NewReader(long)
	if l, _ := lr.ReadString('\n'); l != "A:SSH-2.0-long\r\n" {
		t.Fatalf("long: %q", l)
	}
	writeFile(t, cfg, conf(second))
	p.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", second, time.Second); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new address never listened; stderr:\n%s", p.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for {
		c, err := net.DialTimeout("tcp", first, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("old address still listening")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := ask(t, second, "SSH-2.0-new\r\n"); got != "A:SSH-2.0-new\r\n" {
		t.Fatalf("via new address: %q", got)
	}
	// The connection accepted on the old address still streams both ways.
	io.WriteString(long, "more\n")
	if l, err := lr.ReadString('\n'); err != nil || l != "more\n" {
		t.Fatalf("old stream after rebind: %q %v", l, err)
	}
	if p.cmd.ProcessState != nil {
		t.Fatal("process exited")
	}
}

// metric returns the value of the first /metrics line starting with series.
func metric(t *testing.T, url, series string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %q", series, l)
			}
			return f
		}
	}
	return 0
}

// TestReloadRejectedWhenListenBindFails: a reload that changes a route and
// moves the listener to an address another socket holds is rejected whole:
// the old route keeps serving on the old listener, the failure is logged
// and counted, not counted as a success; a later valid change applies.
func TestReloadRejectedWhenListenBindFails(t *testing.T) {
	a, b := backend(t, "A"), backend(t, "B")
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	first, second := freeAddr(t), freeAddr(t)
	metricsPort := testnet.FreePort(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "protoplex.yaml")
	conf := func(listen, target string) string {
		return fmt.Sprintf("server:\n  listen: %q\nprotocols:\n  - name: SSH\n    target: %q\nmonitoring:\n  metrics_port: %d\n  health_check_port: 0\n", listen, target, metricsPort)
	}
	writeFile(t, cfg, conf(first, a))
	p := start(t, "-config", cfg)
	metrics := "http://" + p.waitLine(t, `^metrics:\s+http://(\S+)/metrics`)[1] + "/metrics"
	p.waitLine(t, `^listening: `)
	if got := ask(t, first, "SSH-2.0-before\r\n"); got != "A:SSH-2.0-before\r\n" {
		t.Fatalf("before: %q", got)
	}
	const success, failure = `protoplex_config_reloads_total{result="success"}`, `protoplex_config_reloads_total{result="failure"}`
	successes, failures := metric(t, metrics, success), metric(t, metrics, failure)

	writeFile(t, cfg, conf(taken.Addr().String(), b))
	p.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.out.String(), "address already in use") {
		if time.Now().After(deadline) {
			t.Fatalf("bind failure not logged; stderr:\n%s", p.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := ask(t, first, "SSH-2.0-after\r\n"); got != "A:SSH-2.0-after\r\n" {
		t.Fatalf("after the failed reload the old listener serves %q, want the old route A", got)
	}
	if !strings.Contains(p.out.String(), "configuration rejected") {
		t.Fatalf("the reload is not reported as rejected; stderr:\n%s", p.out)
	}
	if s, f := metric(t, metrics, success), metric(t, metrics, failure); s != successes || f != failures+1 {
		t.Fatalf("reloads: success %v → %v, failure %v → %v; want success unchanged, one more failure", successes, s, failures, f)
	}

	writeFile(t, cfg, conf(second, b))
	p.cmd.Process.Signal(syscall.SIGHUP)
	for {
		if c, err := net.DialTimeout("tcp", second, time.Second); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a valid change after the failure was not applied; stderr:\n%s", p.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := ask(t, second, "SSH-2.0-new\r\n"); got != "B:SSH-2.0-new\r\n" {
		t.Fatalf("via the new address: %q", got)
	}
}

// TestMonitoringChangeWarned: a reload that changes monitoring or logging
// keys applies its routes and names the keys that need a restart.
func TestMonitoringChangeWarned(t *testing.T) {
	a, b := backend(t, "A"), backend(t, "B")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "protoplex.yaml")
	conf := func(target string, port int) string {
		return fmt.Sprintf("server:\n  listen: \"127.0.0.1:0\"\nprotocols:\n  - name: SSH\n    target: %q\nmonitoring:\n  metrics_port: 0\n  health_check_port: %d\n", target, port)
	}
	writeFile(t, cfg, conf(a, 0))
	p := start(t, "-config", cfg)
	addr := p.waitLine(t, `^listening: (\S+)`)[1]
	writeFile(t, cfg, conf(b, testnet.FreePort(t)))
	p.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.out.String(), "monitoring.health_check_port") {
		if time.Now().After(deadline) {
			t.Fatalf("no warning naming monitoring.health_check_port; stderr:\n%s", p.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := ask(t, addr, "SSH-2.0-new\r\n"); got != "B:SSH-2.0-new\r\n" {
		t.Fatalf("routes of the reload: %q", got)
	}
}

// TestPendingListenersReleased: listeners bound for a reload that is then
// rejected are closed, so the address is free again.
func TestPendingListenersReleased(t *testing.T) {
	addr := freeAddr(t)
	s := &servers{}
	if err := s.prepare([]string{addr}); err != nil {
		t.Fatal(err)
	}
	if _, err := net.Listen("tcp", addr); err == nil {
		t.Fatal("prepare did not bind")
	}
	s.release()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	ln.Close()
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
