//go:build linux

package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
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

// firstRelease is the commit of the first release that moved connections
// on an upgrade (handover format 1, ConnVersion 1): operators run it, and
// upgrade from it to this binary.
const firstRelease = "6abb019"

// releaseBuildBound bounds the build of a released binary from the
// repository's history (its dependencies come from the module cache of
// this build, else the module proxy).
const releaseBuildBound = 5 * time.Minute

// buildRelease builds cmd/protoplex as it was at commit rev, from this
// repository's own history, into the test's temp dir. Without that
// history (a shallow clone) the test is skipped; without git it is
// skipped, or fails under PROTOPLEX_REQUIRE_PEERS=1. Its dependencies and the standard library
// come from the build cache this build filled (no -trimpath, which would
// compile them all again once): only the release's own packages compile,
// seconds.
func buildRelease(t *testing.T, rev string) string {
	t.Helper()
	missing := func(why string) {
		msg := fmt.Sprintf("the released binary %s cannot be built: %s (a full clone of the repository is needed: git fetch --unshallow)", rev, why)
		if os.Getenv("PROTOPLEX_REQUIRE_PEERS") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	git, err := exec.LookPath("git")
	if err != nil {
		missing("git is not installed")
	}
	if out, err := exec.Command(git, "-C", "..", "cat-file", "-e", rev+"^{commit}").CombinedOutput(); err != nil {
		// Not a missing peer that an install fixes: a shallow clone's
		// CI must not fail on it, so this skips even under
		// PROTOPLEX_REQUIRE_PEERS=1, loudly.
		t.Skipf("the released binary %s cannot be built: commit %s is not in the history (%v: %s); a full clone of the repository is needed: git fetch --unshallow", rev, rev, err, strings.TrimSpace(string(out)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), releaseBuildBound)
	defer cancel()
	src := t.TempDir()
	archive := exec.CommandContext(ctx, git, "-C", "..", "archive", rev)
	extract := exec.CommandContext(ctx, "tar", "-x", "-C", src)
	pipe, err := archive.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	extract.Stdin = pipe
	if err := archive.Start(); err != nil {
		t.Fatal(err)
	}
	out, xerr := extract.CombinedOutput()
	if err := archive.Wait(); err != nil || xerr != nil {
		t.Fatalf("git archive %s | tar -x: %v, %v\n%s", rev, err, xerr, out)
	}
	bin := filepath.Join(t.TempDir(), "protoplex-"+rev)
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/protoplex")
	build.Dir = src
	build.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly -buildvcs=false")
	if out, err := build.CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w: not done within %v", err, releaseBuildBound)
		}
		t.Fatalf("building %s's cmd/protoplex: %v\n%s", rev, err, out)
	}
	return bin
}

// TestUpgradeFromFirstRelease: the first release's binary, built from
// the history, serves long-lived streams to an echo server and a client
// that sent half an SSH banner; this binary is installed in its place
// and it is sent SIGUSR2. The new process says hello in a way that
// release reads, speaks its handover format 1 (no commit, ConnVersion-1
// states) and adopts every connection: each stream goes on, on the same
// TCP connection, echoed by the new process once the old one has exited
// (its drain timeout is far longer than the test: it could not exit
// holding one), the half banner is identified once it is complete, and
// new connections are served. Before, the old process refused this binary
// ("speaks another handover format") and every connection was lost on
// the restart that followed.
func TestUpgradeFromFirstRelease(t *testing.T) {
	streams := 20
	released := buildRelease(t, firstRelease)
	current := buildCLI(t)
	echo := testnet.Echo(t)
	banner := testnet.Banner(t, "A:")
	dir := t.TempDir()
	exe := filepath.Join(dir, "protoplex")
	installBinary(t, released, exe)
	cfg := filepath.Join(dir, "protoplex.yaml")
	testnet.WriteFile(t, cfg, fmt.Sprintf(`server:
  listen: "127.0.0.1:0"
  graceful_shutdown_timeout: "600s"
protocols:
  - name: SSH
    target: %q
  - name: bulk
    match_start_bytes: ["42554c4b"] # BULK
    target: %q
monitoring:
  metrics_port: 0
  health_check_port: 0
`, banner, echo))
	addr, p, _ := startCLI(t, exe, "-config", cfg)
	pid := p.Cmd.Process.Pid
	t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL) }) // the new process is in its group

	conns := make([]net.Conn, streams)
	readers := make([]*bufio.Reader, streams)
	roundTrip := func(i int, what string) error {
		c := conns[i]
		_ = c.SetDeadline(time.Now().Add(upgradeBound))
		line := fmt.Sprintf("%s %d\n", what, i)
		if _, err := io.WriteString(c, line); err != nil {
			return err
		}
		got, err := readers[i].ReadString('\n')
		if err != nil || got != line {
			return fmt.Errorf("stream %d: %q back, want %q: %v", i, got, line, err)
		}
		return nil
	}
	for i := range conns {
		c, err := net.DialTimeout("tcp", addr, upgradeBound)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns[i], readers[i] = c, bufio.NewReader(c)
		if _, err := io.WriteString(c, "BULK"); err != nil {
			t.Fatal(err)
		}
		if got, err := io.ReadFull(readers[i], make([]byte, 4)); err != nil || got != 4 {
			t.Fatalf("stream %d: the echo of BULK: %v", i, err)
		}
		if err := roundTrip(i, "before"); err != nil {
			t.Fatal(err)
		}
	}
	half, err := net.DialTimeout("tcp", addr, upgradeBound)
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	_ = half.SetDeadline(time.Now().Add(upgradeBound))
	if _, err := io.WriteString(half, "SS"); err != nil { // identifying: it moves with these bytes
		t.Fatal(err)
	}
	// The streams and the half banner are on the old process's loops
	// (its upgrade log counts them), not accepted only.
	testnet.Eventually(t, upgradeBound, func() bool {
		reply, _ := testnet.RoundTrip(addr, "SSH-2.0-probe\r\n")
		return reply == "A:SSH-2.0-probe\r\n"
	},
		"the released binary does not serve; stderr:\n%s", testnet.Later(p.Out.String))

	installBinary(t, current, exe)
	syscall.Kill(pid, syscall.SIGUSR2)
	upgraded := regexp.MustCompile(`upgrade: the new process serves the listeners[^\n]*pid=(\d+)[^\n]* moved=(\d+) left_to_drain=(\d+)`)
	var m []string
	testnet.Eventually(t, upgradeBound, func() bool {
		m = upgraded.FindStringSubmatch(p.Out.String())
		return m != nil || strings.Contains(p.Out.String(), "upgrade failed")
	}, "no upgrade logged; stderr:\n%s", testnet.Later(p.Out.String))
	if m == nil {
		t.Fatalf("the released binary refused this one:\n%s", p.Out)
	}
	newPID, _ := strconv.Atoi(m[1])
	// The probe's pair may still be closing in the old process (moved,
	// or left to drain): every stream and the half banner move at least.
	moved, _ := strconv.Atoi(m[2])
	if moved < streams+1 {
		t.Errorf("the released binary moved %d connections and kept %s, want %d at least:\n%s", moved, m[3], streams+1, p.Out)
	}
	testnet.Eventually(t, upgradeBound, func() bool { return !alive(pid) },
		"the released binary still runs after the upgrade (it holds a connection to drain); stderr:\n%s", testnet.Later(p.Out.String))
	if !alive(newPID) {
		t.Fatalf("the new process %d is gone; stderr:\n%s", newPID, p.Out)
	}
	for i := range conns {
		if err := roundTrip(i, "after"); err != nil {
			t.Errorf("after the upgrade, through the new process: %v", err)
		}
	}
	if _, err := io.WriteString(half, "H-2.0-half\r\n"); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(half).ReadString('\n'); err != nil || line != "A:SSH-2.0-half\r\n" {
		t.Errorf("the client mid-identification across the upgrade: %q, %v", line, err)
	}
	if got, _ := testnet.RoundTrip(addr, "SSH-2.0-new\r\n"); got != "A:SSH-2.0-new\r\n" {
		t.Errorf("a new connection after the upgrade: %q", got)
	}
	movedIn := regexp.MustCompile(`upgrade: connections moved in[^\n]* moved=(\d+)`)
	testnet.Eventually(t, upgradeBound, func() bool { return movedIn.MatchString(p.Out.String()) }, // the line may still be in the pipe
		"the new process does not say what moved in; stderr:\n%s", testnet.Later(p.Out.String))
	if got := movedIn.FindStringSubmatch(p.Out.String())[1]; got != m[2] {
		t.Errorf("the new process says %s connections moved in, the old one %s", got, m[2])
	}
	for i := range conns {
		_ = conns[i].(*net.TCPConn).CloseWrite()
		if _, err := readers[i].ReadByte(); !errors.Is(err, io.EOF) {
			t.Errorf("stream %d: after its close, %v", i, err)
		}
	}
}

// installBinary puts src at path as an upgrade finds it: a new file
// renamed over the old (the running process keeps its own).
func installBinary(t *testing.T, src, path string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".new", b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}
