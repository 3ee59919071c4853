//go:build unix

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// TestSocketActivation runs the binary under systemd-socket-activate, which
// binds the port and passes it as fd 3 (LISTEN_FDS=1): protoplex serves that
// socket and not server.listen, says so on stdout, keeps serving it across a
// reload that changes server.listen (logged as restart-only) and drains on
// SIGTERM.
func TestSocketActivation(t *testing.T) {
	activate := testnet.RequireBinary(t, "systemd-socket-activate")
	a, b := testnet.Banner(t, "A:"), testnet.Banner(t, "B:")
	addr, configured, changed := testnet.FreeAddr(t), testnet.FreeAddr(t), testnet.FreeAddr(t)
	cfg := filepath.Join(t.TempDir(), "protoplex.yaml")
	conf := func(listen, target string) string {
		return fmt.Sprintf("server:\n  listen: %q\nprotocols:\n  - name: SSH\n    target: %q\nmonitoring:\n  metrics_port: 0\n  health_check_port: 0\n", listen, target)
	}
	testnet.WriteFile(t, cfg, conf(configured, a))
	p := startCmd(t, exec.Command(activate, "-l", addr, binary, "-config", cfg))

	// The first connection makes systemd-socket-activate exec protoplex,
	// which accepts it from the inherited socket.
	testnet.Eventually(t, 10*time.Second, func() bool { return ask(addr, "SSH-2.0-first\r\n") == "A:SSH-2.0-first\r\n" },
		"no answer through the activated socket %s; output:\n%s", addr, p.Out)
	if got := p.waitLine(t, `^listening: (.*)$`)[1]; got != addr+" (socket activation)" {
		t.Fatalf("stdout says listening: %q, want %q", got, addr+" (socket activation)")
	}
	if strings.Count(p.stdout.String(), "listening: ") != 1 {
		t.Fatalf("stdout lists more than the inherited socket:\n%s", p.stdout)
	}
	if testnet.Listening(configured) {
		t.Fatalf("server.listen %s bound besides the inherited socket", configured)
	}

	testnet.WriteFile(t, cfg, conf(changed, b))
	p.Cmd.Process.Signal(syscall.SIGHUP)
	testnet.Eventually(t, 10*time.Second, func() bool { return ask(addr, "SSH-2.0-new\r\n") == "B:SSH-2.0-new\r\n" },
		"reload not applied on the inherited socket; output:\n%s", p.Out)
	testnet.Eventually(t, 10*time.Second, p.logged("server.listen (socket activation)"),
		"the changed server.listen is not reported as restart-only; output:\n%s", p.Out)
	if testnet.Listening(changed) {
		t.Fatalf("a reload bound server.listen %s under socket activation", changed)
	}

	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.Exited():
		if err := p.Wait(); err != nil {
			t.Fatalf("exit: %v; output:\n%s", err, p.Out)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("no exit after SIGTERM; output:\n%s", p.Out)
	}
}

// TestSocketActivationNotOurs: LISTEN_FDS meant for another process
// (LISTEN_PID is not ours) is ignored and server.listen is bound; -listen
// with sockets of our own is a usage error.
func TestSocketActivationNotOurs(t *testing.T) {
	be := testnet.Banner(t, "A:")
	listen := testnet.FreeAddr(t)
	cfg := filepath.Join(t.TempDir(), "protoplex.yaml")
	testnet.WriteFile(t, cfg, fmt.Sprintf("server:\n  listen: %q\nprotocols:\n  - name: SSH\n    target: %q\nmonitoring:\n  metrics_port: 0\n  health_check_port: 0\n", listen, be))
	cmd := exec.Command(binary, "-config", cfg)
	cmd.Env = append(os.Environ(), "LISTEN_PID=1", "LISTEN_FDS=1")
	p := startCmd(t, cmd)
	if got := p.waitLine(t, `^listening: (.*)$`)[1]; got != listen {
		t.Fatalf("listening: %q, want server.listen %s", got, listen)
	}
}

// TestSocketActivationWithListen: -listen and inherited sockets together
// are refused (exit 2) rather than one silently winning.
func TestSocketActivationWithListen(t *testing.T) {
	activate := testnet.RequireBinary(t, "systemd-socket-activate")
	addr := testnet.FreeAddr(t)
	cfg := filepath.Join(t.TempDir(), "protoplex.yaml")
	testnet.WriteFile(t, cfg, "protocols:\n  - name: SSH\n    target: \"127.0.0.1:22\"\n")
	cmd := exec.Command(activate, "-l", addr, binary, "-config", cfg, "-listen", testnet.FreeAddr(t))
	p := testnet.StartProcess(t, cmd)
	testnet.Eventually(t, 10*time.Second, func() bool { ask(addr, "x"); return strings.Contains(p.Out.String(), "Execing") },
		"systemd-socket-activate never started protoplex; output:\n%s", p.Out)
	select {
	case <-p.Exited():
	case <-time.After(10 * time.Second):
		t.Fatalf("still running; output:\n%s", p.Out)
	}
	err := p.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitUsage || !strings.Contains(p.Out.String(), "-listen cannot be combined with socket activation") {
		t.Fatalf("exit %v, want 2 and the reason; output:\n%s", err, p.Out)
	}
}

// TestSystemdUnits: systemd-analyze verify accepts deploy/systemd's units
// (offline, with ExecStart pointed at the test binary), and the service is
// rated well hardened by systemd-analyze security where it runs offline.
func TestSystemdUnits(t *testing.T) {
	analyze := testnet.RequireBinary(t, "systemd-analyze")
	dir := t.TempDir()
	for _, name := range []string{"protoplex.service", "protoplex.socket"} {
		unit, err := os.ReadFile(filepath.Join("../../deploy/systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		testnet.WriteFile(t, filepath.Join(dir, name), strings.ReplaceAll(string(unit), "/usr/local/bin/protoplex", binary))
	}
	unit, _ := os.ReadFile(filepath.Join(dir, "protoplex.service"))
	for _, want := range []string{"DynamicUser=yes", "CapabilityBoundingSet=\n", "AmbientCapabilities=\n", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
		"NoNewPrivileges=yes", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "SystemCallFilter=@system-service", "MemoryDenyWriteExecute=yes",
		"LockPersonality=yes", "ExecReload=/bin/kill -HUP $MAINPID", "Type=notify\nNotifyAccess=all\n", "Restart=on-failure", "ConfigurationDirectory=protoplex", "-config /etc/protoplex/config.yaml"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("protoplex.service lacks %q", want)
		}
	}
	cmd := exec.Command(analyze, "verify", "--man=no", "protoplex.service", "protoplex.socket")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	cmd = exec.Command(analyze, "security", "--offline=yes", "--no-pager", "protoplex.service")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	m := regexp.MustCompile(`exposure level for protoplex.service: ([0-9.]+)`).FindSubmatch(out)
	if err != nil || m == nil {
		t.Skipf("systemd-analyze security --offline not available here (%v): %.200s", err, out)
	}
	if level, _ := strconv.ParseFloat(string(m[1]), 64); level > 2 {
		t.Errorf("systemd-analyze security rates protoplex.service %v exposed, want at most 2 (OK):\n%s", level, out)
	}
}
