package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
