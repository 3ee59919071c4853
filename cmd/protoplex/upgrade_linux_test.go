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
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/internal/udp/udptest"
)

// upgradeBound bounds each wait of the upgrade tests: the new process
// builds its configuration and serves within it on a loaded machine.
const upgradeBound = 30 * time.Second

// load opens connections through each address in turn, one round trip
// each, from several goroutines until stop; every connection that fails
// (refused, reset, a wrong answer) is counted.
type load struct {
	ok, failed atomic.Int64
	start      time.Time
	mu         sync.Mutex
	firstErr   error
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startLoad(addrs [][2]string, workers int) *load {
	l := &load{stop: make(chan struct{}), start: time.Now()}
	for w := range workers {
		l.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				a := addrs[(w+i)%len(addrs)]
				if err := roundTrip(a[0], a[1]); err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					if l.firstErr == nil {
						l.firstErr = fmt.Errorf("%s %s: %w", a[0], a[1], err)
					}
					l.mu.Unlock()
					continue
				}
				l.ok.Add(1)
			}
		})
	}
	return l
}

func (l *load) end() { close(l.stop); l.wg.Wait() }

// roundTrip sends an SSH banner through addr and checks the backend's
// answer ("A:" and the banner).
func roundTrip(network, addr string) error {
	c, err := net.DialTimeout(network, addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "SSH-2.0-load\r\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "A:SSH-2.0-load\r\n" {
		return fmt.Errorf("answer %q", line)
	}
	return nil
}

// TestUpgrade runs the real binary: SIGUSR2 (and then protoplex -upgrade
// PID) starts the binary again, which takes the TCP, Unix and UDP
// listeners and the metrics port, and serves them on the same addresses;
// under a load of new connections over TCP and Unix, not one is refused,
// reset or answered wrongly while the processes change. A stream
// established on the old process is drained, not cut, and the old process
// exits after it. A new process whose configuration is invalid refuses,
// and the old one keeps serving and logs why. Both data planes.
func TestUpgrade(t *testing.T) {
	for _, plane := range []string{"events", "goroutines"} {
		t.Run(plane, func(t *testing.T) { testUpgrade(t, plane) })
	}
}

func testUpgrade(t *testing.T, plane string) {
	backend := testnet.Banner(t, "A:")
	echo := udptest.Echo(t, false)
	dir := t.TempDir()
	sock := filepath.Join(dir, "p.sock")
	metricsPort := testnet.FreePort(t)
	cfg := filepath.Join(dir, "protoplex.yaml")
	valid := fmt.Sprintf(`server:
  listen: ["127.0.0.1:0", "unix:%s"]
  listen_udp: "127.0.0.1:0"
  graceful_shutdown_timeout: "20s"
  data_plane: %q
protocols:
  - name: SSH
    target: %q
  - name: mine
    transport: udp
    match_start_bytes: ["6964"]
    target: %q
monitoring:
  bind_address: 127.0.0.1
  metrics_port: %d
  health_check_port: 0
`, sock, plane, backend, echo, metricsPort)
	testnet.WriteFile(t, cfg, valid)
	p := start(t, "-config", cfg)
	pid := p.Cmd.Process.Pid
	// Every process of the test is in the first one's group: kill them all
	// at the end (the test's stdout pipe stays open while any of them runs).
	t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL) })
	listening := regexp.MustCompile(`(?m)^listening(?: \(udp\))?: (\S+)`) // the stream listeners, then listen_udp's
	first := func() []string {
		var out []string
		for _, m := range listening.FindAllStringSubmatch(p.stdout.String(), -1) {
			out = append(out, m[1])
		}
		return out
	}
	testnet.Eventually(t, upgradeBound, func() bool { return len(first()) == 3 }, "not three listening lines; stdout:\n%s\nstderr:\n%s", p.stdout, p.Out)
	addrs := first()
	tcp, udpAddr := addrs[0], addrs[2]
	if addrs[1] != sock {
		t.Fatalf("listening on %v, want the socket %s second", addrs, sock)
	}
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)

	l := startLoad([][2]string{{"tcp", tcp}, {"unix", sock}}, 4)
	defer l.end()
	testnet.Eventually(t, upgradeBound, func() bool { return l.ok.Load() > 50 }, "the load does not get through: %v", testnet.Later(func() string { return fmt.Sprint(l.firstErr) }))

	// A new process with an invalid configuration: refused, the old one
	// serves on and says why.
	testnet.WriteFile(t, cfg, "protocols:\n  - name: SSH\n    target: \"nope\"\n") // the error is at line 3
	syscall.Kill(pid, syscall.SIGUSR2)
	testnet.Eventually(t, upgradeBound, p.logged("upgrade failed: this process keeps serving"), "no failed upgrade logged; stderr:\n%s", p.Out)
	// The new process printed its reason (file:line) as it exited; the
	// old one's own reload of the edited file logs it too, as a log line.
	if !regexp.MustCompile(`(?m)^/\S*protoplex\.yaml:3: `).MatchString(p.Out.String()) {
		t.Errorf("the new process's reason (file:line) is not in the log:\n%s", p.Out)
	}
	if !strings.Contains(p.Out.String(), "the new process refused: it stopped before it was ready") {
		t.Errorf("the old process does not say the new one exited:\n%s", p.Out)
	}
	if !running(pid) {
		t.Fatal("the old process stopped after a failed upgrade")
	}
	if v := testnet.Metric(t, metricsURL, `protoplex_upgrades_total{result="failure"}`); v != 1 {
		t.Errorf("failed upgrades counted: %v, want 1", v)
	}
	testnet.WriteFile(t, cfg, valid)

	long, longR := openStream(t, tcp, "A:") // established on the old process
	flow, err := net.Dial("udp", udpAddr)   // a UDP flow too: it moves with the loops, drains without
	if err != nil {
		t.Fatal(err)
	}
	defer flow.Close()
	_ = flow.SetDeadline(time.Now().Add(upgradeBound))
	if _, err := flow.Write([]byte("id-before")); err != nil {
		t.Fatal(err)
	}
	if n, err := flow.Read(make([]byte, 64)); err != nil || n != len("id-before") {
		t.Fatalf("a UDP flow before the upgrade: %d bytes, %v", n, err)
	}
	before := l.ok.Load()
	upgrades := 0
	upgraded := func(n int) func() bool {
		return func() bool {
			return strings.Count(p.Out.String(), "upgrade: the new process serves the listeners") >= n
		}
	}
	syscall.Kill(pid, syscall.SIGUSR2)
	upgrades++
	testnet.Eventually(t, upgradeBound, upgraded(upgrades), "no upgrade logged; stderr:\n%s", p.Out)
	next := newPID(t, p.Out.String(), upgrades)
	if plane == "events" {
		// The event loops' stream moves to the new process: the old one
		// exits without waiting for it, and it goes on.
		if !regexp.MustCompile(`upgrade: the new process serves the listeners[^\n]* moved=[1-9][^\n]* udp_flows_moved=1 udp_flows_left=0`).MatchString(p.Out.String()) {
			t.Errorf("the upgrade's log line does not say the stream and the UDP flow moved:\n%s", p.Out)
		}
		testnet.Eventually(t, upgradeBound, func() bool { return !running(pid) }, "the old process still runs after its stream moved; stderr:\n%s", p.Out)
		// Its last line: how many it drained (the load's connections not
		// yet forwarded at the switch) and how long it ran on after the new
		// process was ready.
		exits := regexp.MustCompile(fmt.Sprintf(`upgrade: this process drained and exits" new_pid=%d drained=\d+ after_new_ready=\d`, next))
		testnet.Eventually(t, upgradeBound, func() bool { return exits.MatchString(p.Out.String()) }, "the old process's last line does not say what it drained:\n%s", p.Out)
		io.WriteString(long, "SSH-2.0-still\r\n")
		if line, err := longR.ReadString('\n'); err != nil || line != "SSH-2.0-still\r\n" {
			t.Errorf("the stream established before the upgrade: %q, %v", line, err)
		}
		long.Close()
	} else {
		if !regexp.MustCompile(`upgrade: the new process serves the listeners[^\n]* left_to_drain=[1-9][^\n]* udp_flows_moved=0 udp_flows_left=1`).MatchString(p.Out.String()) {
			t.Errorf("the upgrade's log line does not say the old process drains the stream and the UDP flow it holds:\n%s", p.Out)
		}
		// The goroutine data plane cannot move: the old process drains the
		// established stream, then exits.
		io.WriteString(long, "SSH-2.0-still\r\n")
		if line, err := longR.ReadString('\n'); err != nil || line != "SSH-2.0-still\r\n" { // the backend prefixes its first line only
			t.Errorf("the stream established before the upgrade: %q, %v", line, err)
		}
		if !running(pid) {
			t.Error("the old process exited before its stream ended")
		}
		exits := regexp.MustCompile(fmt.Sprintf(`upgrade: this process drained and exits" new_pid=%d drained=[1-9]\d* after_new_ready=\d`, next))
		if exits.MatchString(p.Out.String()) {
			t.Errorf("the old process says it drained while its stream is open:\n%s", p.Out)
		}
		long.Close()
		testnet.Eventually(t, upgradeBound, func() bool { return !running(pid) }, "the old process still runs after its stream ended; stderr:\n%s", p.Out)
		testnet.Eventually(t, upgradeBound, func() bool { return exits.MatchString(p.Out.String()) }, "the old process's last line does not say it drained the stream:\n%s", p.Out)
	}

	// Then once more, with the command a script runs.
	out, err := exec.Command(binary, "-upgrade", strconv.Itoa(next)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "upgraded: pid "+strconv.Itoa(next)) {
		t.Fatalf("-upgrade %d: %v: %s\nstderr:\n%s", next, err, out, p.Out)
	}
	upgrades++
	last := newPID(t, p.Out.String(), upgrades)
	if !running(last) {
		t.Fatalf("the newest process (%d) does not run; stderr:\n%s", last, p.Out)
	}
	testnet.Eventually(t, upgradeBound, func() bool { return l.ok.Load() > before+200 }, "the load stalls after the upgrades")
	l.end()
	l.stop = make(chan struct{}) // for the deferred end
	if n := l.failed.Load(); n != 0 {
		t.Errorf("%d of %d connections failed during the upgrades, the first: %v", n, n+l.ok.Load(), l.firstErr)
	}
	t.Logf("%d connections through %d upgrades (%.0f new connections/s), none failed", l.ok.Load(), upgrades, float64(l.ok.Load())/time.Since(l.start).Seconds())

	// Every process printed the same addresses: it took the sockets, it
	// did not bind new ones (127.0.0.1:0 would have given other ports).
	all := first()
	if len(all) != 3*(upgrades+1) {
		t.Fatalf("listening lines %v, want 3 per process", all)
	}
	for i := 3; i < len(all); i += 3 {
		if !slices.Equal(all[i:i+3], addrs) {
			t.Errorf("a new process listens on %v, the first on %v", all[i:i+3], addrs)
		}
	}
	// The UDP socket and the metrics port are the newest process's now.
	c, err := net.Dial("udp", udpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(upgradeBound))
	got := make([]byte, 64)
	var n int
	for range 20 { // a datagram may be lost; each try waits for its answer
		c.Write([]byte("id-after"))
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		if n, err = c.Read(got); err == nil {
			break
		}
	}
	if string(got[:n]) != "id-after" {
		t.Errorf("UDP through the new process: %q, %v", got[:n], err)
	}
	if v := testnet.Metric(t, metricsURL, "protoplex_connections_accepted_total"); v <= 0 {
		t.Errorf("the metrics port of the new process: accepted %v", v)
	}
	if v := testnet.Metric(t, metricsURL, `protoplex_upgrades_total{result="success"}`); v != 1 {
		t.Errorf("the newest process counts %v upgrades it took over by, want 1", v)
	}
}

// newPID is the pid the nth successful upgrade logged for its new process.
func newPID(t *testing.T, log string, nth int) int {
	t.Helper()
	ms := regexp.MustCompile(`upgrade: the new process serves the listeners[^\n]*pid=(\d+)`).FindAllStringSubmatch(log, -1)
	if len(ms) < nth {
		t.Fatalf("no pid for upgrade %d in:\n%s", nth, log)
	}
	pid, _ := strconv.Atoi(ms[nth-1][1])
	return pid
}

// install puts the file src at path, as a package manager does: a new file
// renamed over the old (a running binary cannot be written in place).
func install(t *testing.T, src, path string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".new"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// startUpgradable runs protoplex from a path of its own (so that a test
// can install another binary there) with one SSH route to a banner
// backend, server holding extra server: keys; fake is what a test binary
// started by an upgrade plays (fakeEnv). It returns the process, the
// binary's path and the address it listens on.
func startUpgradable(t *testing.T, server, fake string) (p *proc, exe, addr string) {
	t.Helper()
	backend := testnet.Banner(t, "A:")
	dir := t.TempDir()
	exe = filepath.Join(dir, "protoplex")
	install(t, binary, exe)
	cfg := filepath.Join(dir, "protoplex.yaml")
	testnet.WriteFile(t, cfg, fmt.Sprintf("server:\n  listen: \"127.0.0.1:0\"\n%sprotocols:\n  - name: SSH\n    target: %q\nmonitoring:\n  metrics_port: 0\n  health_check_port: 0\n", server, backend))
	cmd := exec.Command(exe, "-config", cfg)
	cmd.Env = append(os.Environ(), fakeEnv+"="+fake) // inherited by what an upgrade starts
	p = startCmd(t, cmd)
	pid := p.Cmd.Process.Pid
	t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL) })
	return p, exe, p.waitLine(t, `^listening: (\S+)`)[1]
}

// upgradeToSound installs protoplex at exe again and upgrades p to it:
// the new process serves the listeners and p exits.
func upgradeToSound(t *testing.T, p *proc, exe string) {
	t.Helper()
	pid := p.Cmd.Process.Pid
	install(t, binary, exe)
	syscall.Kill(pid, syscall.SIGUSR2)
	testnet.Eventually(t, upgradeBound, p.logged("upgrade: the new process serves the listeners"), "no upgrade to the sound binary; stderr:\n%s", p.Out)
	testnet.Eventually(t, upgradeBound, func() bool { return !running(pid) }, "the old process still runs after the upgrade to the sound binary; stderr:\n%s", p.Out)
}

// TestUpgradeRefused: the binary at protoplex's path is replaced by one
// that exits at start, then by one that speaks another handover format,
// then by one that speaks the first release's (a downgrade, refused);
// each upgrade fails, the old process logs why and serves on without
// losing a connection; with protoplex back at the path, the next upgrade
// succeeds.
func TestUpgradeRefused(t *testing.T) {
	p, exe, addr := startUpgradable(t, "", "version")
	pid, dir := p.Cmd.Process.Pid, filepath.Dir(exe)
	l := startLoad([][2]string{{"tcp", addr}}, 2)
	defer l.end()

	for i, tc := range []struct{ name, binary, why string }{
		{"exits at start", "", "exit status 3"},
		{"another format", os.Args[0], "the new binary speaks another handover format"},
		{"the first release's format", "first-release", "the new binary speaks format 1 (an older release)"},
	} {
		switch tc.binary {
		case "":
			testnet.WriteFile(t, filepath.Join(dir, "exit3"), "#!/bin/sh\necho 'this binary cannot start' >&2\nexit 3\n")
			tc.binary = filepath.Join(dir, "exit3")
		case "first-release": // a downgrade
			testnet.WriteFile(t, filepath.Join(dir, "first"), fmt.Sprintf("#!/bin/sh\n%s=first-release exec %q \"$@\"\n", fakeEnv, os.Args[0]))
			tc.binary = filepath.Join(dir, "first")
		}
		install(t, tc.binary, exe)
		before := l.ok.Load()
		syscall.Kill(pid, syscall.SIGUSR2)
		testnet.Eventually(t, upgradeBound, func() bool { return strings.Count(p.Out.String(), "upgrade failed: this process keeps serving") == i+1 },
			"%s: no failed upgrade logged; stderr:\n%s", tc.name, p.Out)
		if !strings.Contains(p.Out.String(), tc.why) {
			t.Errorf("%s: the log does not say %q:\n%s", tc.name, tc.why, p.Out)
		}
		testnet.Eventually(t, upgradeBound, func() bool { return l.ok.Load() > before+20 }, "%s: the old process stopped serving", tc.name)
	}
	upgradeToSound(t, p, exe)
	before := l.ok.Load()
	testnet.Eventually(t, upgradeBound, func() bool { return l.ok.Load() > before+20 }, "the new process does not serve")
	l.end()
	l.stop = make(chan struct{})
	if n := l.failed.Load(); n != 0 {
		t.Errorf("%d connections failed, the first: %v", n, l.firstErr)
	}
}

// TestUpgradeSocketActivation: under systemd-socket-activate the upgrade
// hands the inherited socket over too; the new process serves it as an
// inherited socket (never server.listen), and a load through it sees no
// failure.
func TestUpgradeSocketActivation(t *testing.T) {
	activate := testnet.RequireBinary(t, "systemd-socket-activate")
	backend := testnet.Banner(t, "A:")
	addr, configured := testnet.FreeAddr(t), testnet.FreeAddr(t)
	cfg := filepath.Join(t.TempDir(), "protoplex.yaml")
	testnet.WriteFile(t, cfg, fmt.Sprintf("server:\n  listen: %q\nprotocols:\n  - name: SSH\n    target: %q\nmonitoring:\n  metrics_port: 0\n  health_check_port: 0\n", configured, backend))
	p := startCmd(t, exec.Command(activate, "-l", addr, binary, "-config", cfg))
	pid := p.Cmd.Process.Pid // systemd-socket-activate execs protoplex
	t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL) })
	testnet.Eventually(t, upgradeBound, func() bool { return ask(addr, "SSH-2.0-first\r\n") == "A:SSH-2.0-first\r\n" },
		"no answer through the activated socket %s; output:\n%s", addr, p.Out)
	l := startLoad([][2]string{{"tcp", addr}}, 4)
	defer l.end()

	syscall.Kill(pid, syscall.SIGUSR2)
	testnet.Eventually(t, upgradeBound, p.logged("upgrade: the new process serves the listeners"), "no upgrade; output:\n%s", p.Out)
	testnet.Eventually(t, upgradeBound, func() bool { return !running(pid) }, "the old process still runs; output:\n%s", p.Out)
	if n := strings.Count(p.stdout.String(), "listening: "+addr+" (socket activation)"); n != 2 {
		t.Errorf("%d processes say they serve the inherited socket, want 2:\n%s", n, p.stdout)
	}
	if testnet.Listening(configured) {
		t.Errorf("the new process bound server.listen %s besides the inherited socket", configured)
	}
	before := l.ok.Load()
	testnet.Eventually(t, upgradeBound, func() bool { return l.ok.Load() > before+50 }, "the new process does not serve")
	l.end()
	l.stop = make(chan struct{})
	if n := l.failed.Load(); n != 0 {
		t.Errorf("%d of %d connections failed, the first: %v", n, n+l.ok.Load(), l.firstErr)
	}
}

// TestUpgradeNotify: under a service manager (NOTIFY_SOCKET) the process
// says READY=1 once it serves, and a new process started by an upgrade
// says it is the main process now (MAINPID=) before the old one stops, as
// the manager's child (CLONE_PARENT), not the old process's —
// what a Type=notify unit with NotifyAccess=all follows.
func TestUpgradeNotify(t *testing.T) {
	backend := testnet.Banner(t, "A:")
	dir := t.TempDir()
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "notify"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	cfg := filepath.Join(dir, "protoplex.yaml")
	testnet.WriteFile(t, cfg, fmt.Sprintf("server:\n  listen: \"127.0.0.1:0\"\nprotocols:\n  - name: SSH\n    target: %q\nmonitoring:\n  metrics_port: 0\n  health_check_port: 0\n", backend))
	cmd := exec.Command(binary, "-config", cfg)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+filepath.Join(dir, "notify"))
	p := startCmd(t, cmd)
	pid := p.Cmd.Process.Pid
	t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL) })
	next := func() string {
		t.Helper()
		_ = notify.SetReadDeadline(time.Now().Add(upgradeBound))
		b := make([]byte, 4096)
		n, err := notify.Read(b)
		if err != nil {
			t.Fatalf("no notification: %v; stderr:\n%s", err, p.Out)
		}
		return string(b[:n])
	}
	if got := next(); got != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", got)
	}
	syscall.Kill(pid, syscall.SIGUSR2)
	got := next()
	testnet.Eventually(t, upgradeBound, p.logged("upgrade: the new process serves the listeners"), "no upgrade; stderr:\n%s", p.Out)
	newp := newPID(t, p.Out.String(), 1)
	if want := fmt.Sprintf("MAINPID=%d\nREADY=1", newp); got != want {
		t.Errorf("the new process notified %q, want %q", got, want)
	}
	// It is the manager's child (here the test's), not the old process's:
	// systemd waits on stop only for a main process that is its child.
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", newp))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])) // state, ppid, ...
	if len(f) < 2 || f[1] != strconv.Itoa(os.Getpid()) {
		t.Errorf("the new process's /proc stat %q: want the manager (%d) for its parent, as the old process's", f, os.Getpid())
	}
}

// TestUpgradeCommandErrors: -upgrade with no process to ask fails at once:
// a pid that cannot be protoplex's is a usage error, one no process has a
// failure.
func TestUpgradeCommandErrors(t *testing.T) {
	if _, stderr, code := runBinary(t, "-upgrade", "1"); code != exitUsage || !strings.Contains(stderr, "-upgrade 1") {
		t.Errorf("-upgrade 1: exit %d, %q", code, stderr)
	}
	max, err := os.ReadFile("/proc/sys/kernel/pid_max") // pids stay below it
	if err != nil {
		t.Fatal(err)
	}
	none := strings.TrimSpace(string(max))
	if _, stderr, code := runBinary(t, "-upgrade", none); code != exitFail || !strings.Contains(stderr, "no such process") {
		t.Errorf("-upgrade %s: exit %d, %q", none, code, stderr)
	}
}

// TestUpgradeSignalWhileDraining: a SIGUSR2 to a process that has handed
// over and drains neither ends it nor starts another upgrade: the stream
// it drains completes. (On the goroutine data plane, whose connections
// cannot move: the event loops' would move, and the old process exit.)
func TestUpgradeSignalWhileDraining(t *testing.T) {
	backend := testnet.Banner(t, "A:")
	cfg := filepath.Join(t.TempDir(), "protoplex.yaml")
	testnet.WriteFile(t, cfg, fmt.Sprintf("server:\n  listen: \"127.0.0.1:0\"\n  graceful_shutdown_timeout: \"20s\"\n  data_plane: goroutines\nprotocols:\n  - name: SSH\n    target: %q\nmonitoring:\n  metrics_port: 0\n  health_check_port: 0\n", backend))
	p := start(t, "-config", cfg)
	pid := p.Cmd.Process.Pid
	t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL) })
	addr := p.waitLine(t, `^listening: (\S+)`)[1]
	long, longR := openStream(t, addr, "A:")
	syscall.Kill(pid, syscall.SIGUSR2)
	testnet.Eventually(t, upgradeBound, p.logged("upgrade: the new process serves the listeners"), "no upgrade; stderr:\n%s", p.Out)
	testnet.Eventually(t, upgradeBound, p.logged("shutting down: draining connections"), "the old process does not drain; stderr:\n%s", p.Out)
	syscall.Kill(pid, syscall.SIGUSR2) // a script retrying
	io.WriteString(long, "SSH-2.0-still\r\n")
	if line, err := longR.ReadString('\n'); err != nil || line != "SSH-2.0-still\r\n" {
		t.Fatalf("the drained stream after a second SIGUSR2: %q, %v; stderr:\n%s", line, err, p.Out)
	}
	if !running(pid) {
		t.Fatal("a SIGUSR2 ended the draining process")
	}
	if n := strings.Count(p.Out.String(), "upgrade: the new process serves the listeners"); n != 1 {
		t.Errorf("%d upgrades, want the one", n)
	}
}

// TestUpgradeConnectionsRefused: the new process serves without event
// loops (its configuration says data_plane: goroutines), so it refuses the
// connections the old one offers: the old process takes them back, logs
// why, serves them on and exits once they end.
func TestUpgradeConnectionsRefused(t *testing.T) {
	backend := testnet.Banner(t, "A:")
	cfg := filepath.Join(t.TempDir(), "protoplex.yaml")
	config := func(plane string) string {
		return fmt.Sprintf("server:\n  listen: \"127.0.0.1:0\"\n  graceful_shutdown_timeout: \"20s\"\n  data_plane: %s\nprotocols:\n  - name: SSH\n    target: %q\nmonitoring:\n  metrics_port: 0\n  health_check_port: 0\n", plane, backend)
	}
	testnet.WriteFile(t, cfg, config("events"))
	p := start(t, "-config", cfg)
	pid := p.Cmd.Process.Pid
	t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL) })
	addr := p.waitLine(t, `^listening: (\S+)`)[1]
	long, longR := openStream(t, addr, "A:")
	testnet.WriteFile(t, cfg, config("goroutines"))
	syscall.Kill(pid, syscall.SIGUSR2)
	testnet.Eventually(t, upgradeBound, p.logged("upgrade: the new process serves the listeners"), "no upgrade; stderr:\n%s", p.Out)
	if !regexp.MustCompile(`upgrade: the new process serves the listeners[^\n]* moved=0 left_to_drain=1`).MatchString(p.Out.String()) {
		t.Errorf("the old process does not say it kept the stream:\n%s", p.Out)
	}
	if !strings.Contains(p.Out.String(), "serves without event loops") {
		t.Errorf("no reason for the refusal logged:\n%s", p.Out)
	}
	io.WriteString(long, "SSH-2.0-still\r\n")
	if line, err := longR.ReadString('\n'); err != nil || line != "SSH-2.0-still\r\n" {
		t.Fatalf("the stream the new process refused: %q, %v; stderr:\n%s", line, err, p.Out)
	}
	if !running(pid) {
		t.Fatal("the old process exited with the stream it kept")
	}
	long.Close()
	testnet.Eventually(t, upgradeBound, func() bool { return !running(pid) }, "the old process still runs after its stream ended; stderr:\n%s", p.Out)
}

// slowBackend is a loopback listener whose accept queue is full (backlog
// 0, one connection queued, nothing accepts): a connect to it stalls, the
// kernel dropping its SYNs, until serve starts accepting; then each
// connection is answered as testnet.Banner does ("A:" and the first
// line).
type slowBackend struct {
	port int
	ln   net.Listener
}

func newSlowBackend(t *testing.T) *slowBackend {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "slow backend")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	b := &slowBackend{port: ln.Addr().(*net.TCPAddr).Port, ln: ln}
	for range 16 { // fill the queue
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 200*time.Millisecond)
		if err != nil {
			return b
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Skip("connects still complete with the accept queue full: no dial can be made to stall here")
	return nil
}

// synSent reports whether a socket of this host is sending a SYN to the
// backend: a connect stalls on it.
func (b *slowBackend) synSent() bool {
	raw, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return false
	}
	remote := fmt.Sprintf("0100007F:%04X", b.port)
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && f[2] == remote && f[3] == "02" { // TCP_SYN_SENT
			return true
		}
	}
	return false
}

// serve accepts from now on and answers each connection.
func (b *slowBackend) serve(t *testing.T) {
	go func() {
		for {
			c, err := b.ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(upgradeBound))
				r := bufio.NewReader(c)
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				io.WriteString(c, "A:"+line)
				io.Copy(c, r)
			}()
		}
	}()
}

// TestUpgradeMidDial runs the real binary: a client whose backend is a
// host name being dialed (off the event loop) to a backend that does not
// answer yet moves to the new process with the bytes it sent; the old
// process abandons its dial and exits at once, and the new one dials
// again and replays those bytes when the backend comes up. Before, the
// old process held such a connection until its dial ended.
func TestUpgradeMidDial(t *testing.T) {
	backend := newSlowBackend(t)
	cfg := filepath.Join(t.TempDir(), "protoplex.yaml")
	testnet.WriteFile(t, cfg, fmt.Sprintf(`server:
  listen: "127.0.0.1:0"
  graceful_shutdown_timeout: "60s"
  dial_timeout: "60s"
  data_plane: events
protocols:
  - name: SSH
    target: "localhost:%d"
monitoring:
  metrics_port: 0
  health_check_port: 0
`, backend.port))
	p := start(t, "-config", cfg)
	pid := p.Cmd.Process.Pid
	t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL) })
	addr := p.waitLine(t, `^listening: (\S+)`)[1]

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * upgradeBound))
	io.WriteString(c, "SSH-2.0-middial\r\n")
	testnet.Eventually(t, upgradeBound, backend.synSent, "protoplex does not dial the backend; stderr:\n%s", p.Out)

	syscall.Kill(pid, syscall.SIGUSR2)
	testnet.Eventually(t, upgradeBound, p.logged("upgrade: the new process serves the listeners"), "no upgrade logged; stderr:\n%s", p.Out)
	if !regexp.MustCompile(`upgrade: the new process serves the listeners[^\n]* moved=1 left_to_drain=0`).MatchString(p.Out.String()) {
		t.Errorf("the upgrade's log line does not say the connection mid-dial moved:\n%s", p.Out)
	}
	// Its dial abandoned, the old process holds nothing: it exits while
	// the backend is still down.
	testnet.Eventually(t, upgradeBound, func() bool { return !running(pid) }, "the old process still runs with its connection mid-dial; stderr:\n%s", p.Out)

	backend.serve(t)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "A:SSH-2.0-middial\r\n" {
		t.Fatalf("the connection mid-dial after the upgrade: %q, %v; stderr:\n%s", line, err, p.Out)
	}
}

// TestUpgradeDrainBounded: on the goroutine data plane nothing moves; a
// stream that outlives server.graceful_shutdown_timeout is cut by the old
// process, which then exits, its last line saying how many it drained.
func TestUpgradeDrainBounded(t *testing.T) {
	backend := testnet.Banner(t, "A:")
	cfg := filepath.Join(t.TempDir(), "protoplex.yaml")
	testnet.WriteFile(t, cfg, fmt.Sprintf("server:\n  listen: \"127.0.0.1:0\"\n  graceful_shutdown_timeout: \"1s\"\n  data_plane: goroutines\nprotocols:\n  - name: SSH\n    target: %q\nmonitoring:\n  metrics_port: 0\n  health_check_port: 0\n", backend))
	p := start(t, "-config", cfg)
	pid := p.Cmd.Process.Pid
	t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL) })
	addr := p.waitLine(t, `^listening: (\S+)`)[1]
	long, longR := openStream(t, addr, "A:")
	syscall.Kill(pid, syscall.SIGUSR2)
	testnet.Eventually(t, upgradeBound, p.logged("upgrade: the new process serves the listeners"), "no upgrade; stderr:\n%s", p.Out)
	testnet.Eventually(t, upgradeBound, func() bool { return !running(pid) }, "the old process outlives its drain timeout; stderr:\n%s", p.Out)
	exits := regexp.MustCompile(fmt.Sprintf(`upgrade: this process drained and exits" new_pid=%d drained=1 after_new_ready=\d`, newPID(t, p.Out.String(), 1)))
	// Its last line may still be in the pipe as it is gone.
	testnet.Eventually(t, upgradeBound, func() bool { return exits.MatchString(p.Out.String()) }, "the old process's last line does not say it drained the stream:\n%s", p.Out)
	_ = long.SetReadDeadline(time.Now().Add(upgradeBound))
	io.WriteString(long, "SSH-2.0-late\r\n")
	if line, err := longR.ReadString('\n'); err == nil {
		t.Errorf("the stream outlived the old process's drain timeout: %q", line)
	}
}

// TestUpgradeNewProcessDiesAtCommit runs the real binary: the new binary
// takes the listeners, says it can take the first batch of connections,
// and dies on its commit, before it says it adopted it. The old process
// keeps that batch: a stream established before the upgrade is served by
// it on, and its log says it kept the stream. Before the adoption step the
// old process closed its copies on the commit, and the stream was lost.
// It keeps the listeners too: the new process that took them is gone, so
// the old one serves on as after any failed upgrade, accepts new
// connections, and a later upgrade to a sound binary moves the stream.
func TestUpgradeNewProcessDiesAtCommit(t *testing.T) {
	p, exe, addr := startUpgradable(t, "  graceful_shutdown_timeout: \"60s\"\n  data_plane: events\n", "die-at-commit")
	pid := p.Cmd.Process.Pid
	long, longR := openStream(t, addr, "A:")
	install(t, os.Args[0], exe)
	syscall.Kill(pid, syscall.SIGUSR2)
	testnet.Eventually(t, upgradeBound, p.logged("upgrade failed: the new process went away while connections moved"), "no failed upgrade; stderr:\n%s", p.Out)
	if !regexp.MustCompile(`upgrade failed: the new process went away[^\n]* lost_with_it=0 kept=1`).MatchString(p.Out.String()) {
		t.Errorf("the old process does not say it kept the stream:\n%s", p.Out)
	}
	if !strings.Contains(p.Out.String(), "no adoption of a committed batch of 1") {
		t.Errorf("no reason logged for keeping the batch:\n%s", p.Out)
	}
	if strings.Contains(p.Out.String(), "upgrade: the new process serves the listeners") {
		t.Errorf("the old process took the upgrade for done:\n%s", p.Out)
	}
	io.WriteString(long, "SSH-2.0-still\r\n")
	if line, err := longR.ReadString('\n'); err != nil || line != "SSH-2.0-still\r\n" {
		t.Fatalf("the stream whose batch was committed to a process that died: %q, %v; stderr:\n%s", line, err, p.Out)
	}
	// Still accepting: a new stream is served.
	fresh, freshR := openStream(t, addr, "A:")
	io.WriteString(fresh, "SSH-2.0-fresh\r\n")
	if line, err := freshR.ReadString('\n'); err != nil || line != "SSH-2.0-fresh\r\n" {
		t.Fatalf("a connection after the failed upgrade: %q, %v; stderr:\n%s", line, err, p.Out)
	}
	fresh.Close()
	// And it can still upgrade: a sound binary takes the listeners and the stream.
	upgradeToSound(t, p, exe)
	io.WriteString(long, "SSH-2.0-moved\r\n")
	if line, err := longR.ReadString('\n'); err != nil || line != "SSH-2.0-moved\r\n" {
		t.Fatalf("the stream after the second upgrade: %q, %v; stderr:\n%s", line, err, p.Out)
	}
	long.Close()
}
