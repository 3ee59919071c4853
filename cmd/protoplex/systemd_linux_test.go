package main

import (
	"bufio"
	"bytes"
	"context"
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
	"github.com/darkit/protoplex/internal/udp/udptest"
	"golang.org/x/sys/unix"
)

// TestUpgradeUnderSystemd runs the shipped units under a real systemd: PID
// 1 of its own PID, mount, UTS, IPC and cgroup namespaces (the host's
// network, so the test reaches the service on 127.0.0.1). The service is
// started, holds streams and serves a load of new connections; then, twice,
// systemctl kill -s USR2 --kill-whom=main upgrades it. Each time systemd
// must follow the new main process (MainPID), the unit must stay active
// without a restart, the old process must be gone, the held streams must
// answer and no new connection may fail; systemctl stop then stops the
// newest process, after systemctl reload has reached it. Before those, an
// upgrade to a binary that exits at start fails: systemd still follows the
// old process, which serves on. Once with the socket unit (TCP and, with udp.conf, UDP)
// and once without it, edited out as deploy/systemd/README.md says.
func TestUpgradeUnderSystemd(t *testing.T) {
	for _, socket := range []bool{true, false} {
		name := "socket"
		if !socket {
			name = "no-socket"
		}
		t.Run(name, func(t *testing.T) { testUpgradeUnderSystemd(t, socket) })
	}
}

func testUpgradeUnderSystemd(t *testing.T, socket bool) {
	backend := testnet.Banner(t, "A:")
	echo := udptest.Echo(t, false)
	port, udpPort := testnet.FreePort(t), testnet.FreePort(t)
	addr, udpAddr := fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("127.0.0.1:%d", udpPort)
	config := fmt.Sprintf(`server:
  listen: %q
  listen_udp: %q
  graceful_shutdown_timeout: "20s"
protocols:
  - name: SSH
    target: %q
  - name: mine
    transport: udp
    match_start_bytes: ["6964"]
    target: %q
monitoring:
  metrics_port: 0
  health_check_port: 0
`, addr, udpAddr, backend, echo)
	units := map[string]string{
		"protoplex.service": shippedUnit(t, "protoplex.service"),
		// The test's unit, which boot starts.
		"protoplex-test.target": "[Unit]\nDescription=protoplex test\nWants=protoplex.service\n",
	}
	if socket {
		units["protoplex.socket"] = shippedUnit(t, "protoplex.socket")
		units["protoplex.socket.d/udp.conf"] = shippedUnit(t, "udp.conf")
		// Loopback ports instead of 443 (zz: after udp.conf). An empty
		// ListenStream= or ListenDatagram= empties the whole list, both
		// kinds.
		units["protoplex.socket.d/zz-test.conf"] = fmt.Sprintf("[Socket]\nListenStream=\nListenStream=%s\nListenDatagram=%s\n", addr, udpAddr)
	} else {
		// "Without the socket unit": the dependency can only be taken
		// out of the unit itself (a drop-in cannot remove one).
		svc := units["protoplex.service"]
		for _, line := range []string{"Requires=protoplex.socket\n", "After=protoplex.socket network-online.target\n"} {
			if !strings.Contains(svc, line) {
				t.Fatalf("protoplex.service has no line %q to edit", line)
			}
		}
		svc = strings.Replace(svc, "Requires=protoplex.socket\n", "", 1)
		units["protoplex.service"] = strings.Replace(svc, "After=protoplex.socket network-online.target\n", "After=network-online.target\n", 1)
	}
	s := bootSystemd(t, units, config)
	testnet.Eventually(t, upgradeBound, func() bool { return s.show("protoplex.service", "ActiveState") == "active" },
		"protoplex.service is not active: %v; console:\n%s", testnet.Later(func() string { return s.show("protoplex.service", "ActiveState") }), s.console)
	invocation := s.show("protoplex.service", "InvocationID")
	main := s.mainPID(t)
	if socket && !strings.Contains(s.console.String(), "listening: "+addr+" (socket activation)") {
		t.Errorf("the service does not serve the socket unit's socket; console:\n%s", s.console)
	}

	nofile := s.openFiles(t, main) // LimitNOFILE=, where this machine lets systemd raise it
	var held []*bufio.Reader
	var heldConns []net.Conn
	for range 3 {
		c, r := openStream(t, addr, "A:")
		heldConns, held = append(heldConns, c), append(held, r)
	}
	l := startLoad([][2]string{{"tcp", addr}}, 4)
	defer l.end()
	testnet.Eventually(t, upgradeBound, func() bool { return l.ok.Load() > 50 }, "the load does not get through: %v", testnet.Later(func() string { return fmt.Sprint(l.firstErr) }))

	// A new binary that exits at start: the upgrade fails, and systemd
	// still follows the old process, which serves on.
	exe := fmt.Sprintf("/proc/%d/root/usr/local/bin/protoplex", s.pid)
	bad := filepath.Join(t.TempDir(), "exit3")
	testnet.WriteFile(t, bad, "#!/bin/sh\necho 'this binary cannot start' >&2\nexit 3\n")
	install(t, bad, exe)
	before := l.ok.Load()
	s.systemctl(t, "kill", "-s", "USR2", "--kill-whom=main", "protoplex.service")
	testnet.Eventually(t, upgradeBound, func() bool { return strings.Contains(s.console.String(), "upgrade failed: this process keeps serving") },
		"no failed upgrade logged; console:\n%s", s.console)
	testnet.Eventually(t, upgradeBound, func() bool { return l.ok.Load() > before+50 }, "the old process stopped serving after a failed upgrade")
	if got := s.mainPID(t); got != main {
		t.Fatalf("after a failed upgrade systemd follows %d, want the old process %d; console:\n%s", got, main, s.console)
	}
	if got := s.show("protoplex.service", "ActiveState") + "/" + s.show("protoplex.service", "InvocationID"); got != "active/"+invocation {
		t.Fatalf("after a failed upgrade protoplex.service is %s, want active/%s; console:\n%s", got, invocation, s.console)
	}
	install(t, binary, exe)

	for i := range 2 {
		before := l.ok.Load()
		s.systemctl(t, "kill", "-s", "USR2", "--kill-whom=main", "protoplex.service")
		testnet.Eventually(t, upgradeBound, func() bool {
			pid, _ := strconv.Atoi(s.show("protoplex.service", "MainPID"))
			return pid != 0 && pid != main
		}, "upgrade %d: systemd still takes %d for the main process; console:\n%s", i+1, main, s.console)
		old := main
		main = s.mainPID(t)
		testnet.Eventually(t, upgradeBound, func() bool { return !s.running(old) }, "upgrade %d: the old process %d still runs; console:\n%s", i+1, old, s.console)
		if got := s.show("protoplex.service", "ActiveState") + "/" + s.show("protoplex.service", "SubState"); got != "active/running" {
			t.Fatalf("upgrade %d: protoplex.service is %s; console:\n%s", i+1, got, s.console)
		}
		if got := s.show("protoplex.service", "InvocationID"); got != invocation {
			t.Fatalf("upgrade %d: systemd restarted the service (invocation %s, was %s); console:\n%s", i+1, got, invocation, s.console)
		}
		if procs := s.serviceProcs(t); len(procs) != 1 {
			t.Errorf("upgrade %d: the service's cgroup holds %v, want the new process alone", i+1, procs)
		}
		for j, c := range heldConns {
			line := fmt.Sprintf("SSH-2.0-held-%d-%d\r\n", i, j)
			io.WriteString(c, line)
			if got, err := held[j].ReadString('\n'); err != nil || got != line {
				t.Errorf("upgrade %d: held stream %d: %q, %v", i+1, j, got, err)
			}
		}
		if socket {
			if got, err := udpAsk(udpAddr, "id-after"); err != nil || got != "id-after" {
				t.Errorf("upgrade %d: UDP through the socket unit's socket: %q, %v", i+1, got, err)
			}
		}
		testnet.Eventually(t, upgradeBound, func() bool { return l.ok.Load() > before+50 }, "upgrade %d: the new process does not serve", i+1)
	}
	l.end()
	l.stop = make(chan struct{}) // for the deferred end
	if n := l.failed.Load(); n != 0 {
		t.Errorf("%d of %d connections failed during the upgrades, the first: %v", n, n+l.ok.Load(), l.firstErr)
	}
	t.Logf("%d connections through 2 upgrades under systemd (%.0f new connections/s), %d failed", l.ok.Load(), float64(l.ok.Load())/time.Since(l.start).Seconds(), l.failed.Load())
	// systemd follows each new process as its own child: one that is not
	// it would not wait for on stop (SIGKILL right after SIGTERM).
	if strings.Contains(s.console.String(), "which is not our child") {
		t.Errorf("systemd follows a main process that is not its child; console:\n%s", s.console)
	}
	if n := strings.Count(s.console.String(), "upgrade: the new process serves the listeners"); n != 2 {
		t.Errorf("%d upgrades logged, want 2; console:\n%s", n, s.console)
	}
	// The newest process has the first one's open-files limit: an upgrade
	// does not lose the descriptor budget the moved connections need.
	if got := s.openFiles(t, main); got != nofile {
		t.Errorf("the newest process's open-files limit is %q, the first one's %q", got, nofile)
	}
	for _, c := range heldConns {
		c.Close()
	}
	// systemctl reload (ExecReload=, SIGHUP to $MAINPID) reaches the
	// newest process: the edited file routes new connections elsewhere.
	other := testnet.Banner(t, "B:")
	testnet.WriteFile(t, fmt.Sprintf("/proc/%d/root/etc/protoplex/config.yaml", s.pid), strings.Replace(config, backend, other, 1))
	s.systemctl(t, "reload", "protoplex.service")
	testnet.Eventually(t, upgradeBound, func() bool { return ask(addr, "SSH-2.0-reload\r\n") == "B:SSH-2.0-reload\r\n" },
		"systemctl reload did not reach the newest process; console:\n%s", s.console)

	// systemctl stop stops the process systemd follows: SIGTERM, a drain,
	// exit 0; no SIGKILL after TimeoutStopSec.
	s.systemctl(t, "stop", "protoplex.service")
	if got := s.show("protoplex.service", "ActiveState") + "/" + s.show("protoplex.service", "Result"); got != "inactive/success" {
		t.Errorf("after systemctl stop: %s, want inactive/success; console:\n%s", got, s.console)
	}
	if s.running(main) {
		t.Errorf("the newest process %d still runs after systemctl stop", main)
	}
	if procs := s.serviceProcs(t); len(procs) != 0 {
		t.Errorf("processes %v left in the service's cgroup after systemctl stop", procs)
	}
}

// shippedUnit is the text of deploy/systemd/name.
func shippedUnit(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("../../deploy/systemd", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// udpAsk sends msg to addr over UDP and returns the answer; a datagram may
// be lost, so it tries up to 20 times, each waiting a second for its answer.
func udpAsk(addr, msg string) (string, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	got := make([]byte, 2048)
	for range 20 {
		if _, err = c.Write([]byte(msg)); err != nil {
			continue
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		var n int
		if n, err = c.Read(got); err == nil {
			return string(got[:n]), nil
		}
	}
	return "", err
}

// booted is a systemd running as PID 1 of its own namespaces.
type booted struct {
	pid     int             // systemd's pid in the test's namespace
	cgroup  string          // the cgroup2 directory that is its namespace's root
	console *testnet.Buffer // what systemd and the services wrote to /dev/console
}

// systemdPaths are where Debian and others install systemd itself.
var systemdPaths = []string{"/lib/systemd/systemd", "/usr/lib/systemd/systemd"}

// bootSystemd starts systemd as PID 1 of new PID, mount, UTS, IPC and
// cgroup namespaces, with units (path under the unit directory → text) as
// its only units, the test binary at /usr/local/bin/protoplex and config
// at /etc/protoplex/config.yaml, and boots protoplex-test.target. /run,
// /tmp, /usr/local/bin and an overlay of /etc are private to it, so
// nothing of the host changes; its console is a pty the test reads. It is
// stopped, and everything it made removed, when the test ends. Where
// systemd cannot run so (not root, no systemd, no cgroup2 to delegate) the
// test is skipped with the reason.
func bootSystemd(t *testing.T, units map[string]string, config string) *booted {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("running systemd as PID 1 of a namespace needs root")
	}
	var systemd string
	for _, p := range systemdPaths {
		if _, err := os.Stat(p); err == nil {
			systemd = p
			break
		}
	}
	if systemd == "" {
		testnet.RequireBinary(t, systemdPaths[0]) // skips, or fails under PROTOPLEX_REQUIRE_PEERS=1
	}
	unshare := testnet.RequireBinary(t, "unshare")
	testnet.RequireBinary(t, "nsenter")
	if out, err := exec.Command(unshare, "--pid", "--fork", "--mount", "--cgroup", "true").CombinedOutput(); err != nil {
		t.Skipf("no PID, mount and cgroup namespaces here (a container without CAP_SYS_ADMIN?): %v: %s", err, out)
	}
	parent, err := delegatedCgroup()
	if err != nil {
		t.Skipf("systemd needs a cgroup2 directory of its own: %v", err)
	}
	cg := filepath.Join(parent, fmt.Sprintf("protoplex-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Skipf("systemd needs a cgroup2 directory of its own: %v", err)
	}
	t.Cleanup(func() { removeCgroup(t, cg) })
	cgfd, err := unix.Open(cg, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(cgfd)

	master, slave := openPTY(t)
	b := &booted{cgroup: cg, console: &testnet.Buffer{}}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		io.Copy(crlf{b.console}, master) // ends with EIO once the namespace is gone, or at Close
	}()
	t.Cleanup(func() { master.Close(); <-copied })

	dir := t.TempDir()
	for name, text := range units {
		path := filepath.Join(dir, "units", name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		testnet.WriteFile(t, path, text)
	}
	// Stand-ins for the targets the units' default dependencies name:
	// nothing of the host's boot runs.
	for _, target := range []string{"sysinit", "basic", "sockets", "shutdown", "network-online", "multi-user", "default"} {
		testnet.WriteFile(t, filepath.Join(dir, "units", target+".target"), "[Unit]\nDescription=test stand-in\n")
	}
	testnet.WriteFile(t, filepath.Join(dir, "config.yaml"), config)
	run := "/run/protoplex-test"
	script := strings.Join([]string{
		"set -e",
		// /run first: it holds the units and the /etc overlay's upper layer.
		"mount -t tmpfs -o mode=0755 protoplex-test /run",
		"mkdir -p " + run + "/units " + run + "/etc",
		`cp -R "$DIR/units/." ` + run + "/units/",
		"mount -t tmpfs -o mode=0755 protoplex-test /usr/local/bin",
		`cp "$BINARY" /usr/local/bin/protoplex`,
		"mount -t tmpfs -o mode=0755 protoplex-test " + run + "/etc",
		"mkdir " + run + "/etc/upper " + run + "/etc/work",
		"mount -t overlay -o lowerdir=/etc,upperdir=" + run + "/etc/upper,workdir=" + run + "/etc/work protoplex-test /etc",
		"mkdir -p /etc/protoplex",
		`cp "$DIR/config.yaml" /etc/protoplex/config.yaml`,
		"chmod 0644 /etc/protoplex/config.yaml", // the service's dynamic user reads it
		`mount --bind "$CONSOLE" /dev/console`,
		"mount -t tmpfs -o mode=1777 protoplex-test /tmp",     // after the last read of $DIR
		"mount -t tmpfs -o mode=1777 protoplex-test /var/tmp", // PrivateTmp= makes directories there
		"mount -t cgroup2 cgroup2 /sys/fs/cgroup",
		`exec env -i container=protoplex-test SYSTEMD_UNIT_PATH=` + run + `/units PATH=/usr/sbin:/usr/bin:/sbin:/bin "$SYSTEMD" --system --unit=protoplex-test.target --log-target=console --default-standard-output=tty --default-standard-error=tty`,
	}, "\n")
	cmd := exec.Command(unshare, "--pid", "--fork", "--kill-child", "--mount", "--mount-proc", "--propagation=private", "--uts", "--ipc", "--cgroup", "sh", "-c", script)
	cmd.Env = append(os.Environ(), "DIR="+dir, "BINARY="+binary, "CONSOLE="+slave, "SYSTEMD="+systemd)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cgfd, Pdeathsig: syscall.SIGKILL}
	p := testnet.StartProcess(t, cmd)
	t.Cleanup(func() { b.shutdown(t, p) })
	testnet.Eventually(t, upgradeBound, func() bool {
		select {
		case <-p.Exited():
			t.Fatalf("the namespace ended: %v\n%s\nconsole:\n%s", p.Wait(), p.Out, b.console)
		default:
		}
		if b.pid == 0 {
			b.pid = childOf(p.Cmd.Process.Pid)
		}
		return b.pid != 0 && b.show("protoplex-test.target", "ActiveState") == "active"
	}, "systemd did not boot; output:\n%s\nconsole:\n%s", p.Out, b.console)
	return b
}

// shutdown asks systemd to exit (it stops its units), then kills what is
// left of the namespace: killing unshare kills systemd (--kill-child),
// which ends every process of its PID namespace.
func (b *booted) shutdown(t *testing.T, p *testnet.Process) {
	if b.pid != 0 {
		// The request is made again until systemd is gone: on a loaded
		// machine one was seen to go unheeded for 10 s. What the test
		// checks of a stop (systemctl stop) is done by then; this only
		// tidies up, so a systemd that still runs is logged and killed.
		deadline := time.Now().Add(30 * time.Second)
	exit:
		for time.Now().Before(deadline) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			exec.CommandContext(ctx, "nsenter", "-t", strconv.Itoa(b.pid), "-m", "-p", "systemctl", "--force", "exit").Run()
			cancel()
			select {
			case <-p.Exited():
				break exit
			case <-time.After(5 * time.Second):
			}
		}
		select {
		case <-p.Exited():
		default:
			t.Logf("systemd did not exit within 30 s; killing its namespace")
		}
	}
	p.Stop()
}

// systemctl runs systemctl in the namespace, bounded.
func (b *booted) systemctl(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), upgradeBound)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(b.pid), "-m", "-p", "systemctl"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("systemctl %s: %v: %s\nconsole:\n%s", strings.Join(args, " "), err, out, b.console)
	}
	return string(out)
}

// show is one property of unit ("" where systemctl fails).
func (b *booted) show(unit, property string) string {
	ctx, cancel := context.WithTimeout(context.Background(), upgradeBound)
	defer cancel()
	out, _ := exec.CommandContext(ctx, "nsenter", "-t", strconv.Itoa(b.pid), "-m", "-p", "systemctl", "show", "--value", "-p", property, unit).Output()
	return strings.TrimSpace(string(out))
}

// mainPID is the main process systemd follows for protoplex.service (a pid
// of its namespace).
func (b *booted) mainPID(t *testing.T) int {
	t.Helper()
	pid, err := strconv.Atoi(b.show("protoplex.service", "MainPID"))
	if err != nil || pid == 0 {
		t.Fatalf("protoplex.service has no main process (%v); console:\n%s", err, b.console)
	}
	return pid
}

// running reports whether pid, of systemd's namespace, is a live process.
func (b *booted) running(pid int) bool {
	return runningAt(fmt.Sprintf("/proc/%d/root/proc/%d", b.pid, pid))
}

// openFiles is the "Max open files" line of pid's limits (a pid of
// systemd's namespace).
func (b *booted) openFiles(t *testing.T, pid int) string {
	t.Helper()
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/proc/%d/limits", b.pid, pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^Max open files.*$`).Find(limits)
	if m == nil {
		t.Fatalf("no open-files limit in:\n%s", limits)
	}
	return strings.Join(strings.Fields(string(m)), " ")
}

// serviceProcs are the processes in protoplex.service's cgroup.
func (b *booted) serviceProcs(t *testing.T) []string {
	t.Helper()
	out, err := os.ReadFile(filepath.Join(b.cgroup, "system.slice", "protoplex.service", "cgroup.procs"))
	if os.IsNotExist(err) {
		return nil // systemd removes the cgroup of a stopped unit
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(out))
}

// delegatedCgroup is the test's own cgroup in the cgroup2 hierarchy: a new
// directory under it becomes systemd's root.
func delegatedCgroup() (string, error) {
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	var path string
	for _, line := range strings.Split(string(own), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			path = p
		}
	}
	if path == "" {
		return "", fmt.Errorf("the test's process is in no cgroup2 hierarchy")
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS... - FSTYPE SOURCE SUPER
		f := strings.Fields(line)
		if i := indexOf(f, "-"); i > 4 && i+1 < len(f) && f[i+1] == "cgroup2" && f[3] == "/" {
			return filepath.Join(f[4], path), nil
		}
	}
	return "", fmt.Errorf("no cgroup2 file system mounted")
}

func indexOf(f []string, s string) int {
	for i, v := range f {
		if v == s {
			return i
		}
	}
	return -1
}

// removeCgroup removes dir and the cgroups systemd made under it, deepest
// first, once their processes are gone.
func removeCgroup(t *testing.T, dir string) {
	testnet.Eventually(t, upgradeBound, func() bool {
		var dirs []string
		filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			os.Remove(dirs[i])
		}
		_, err := os.Stat(dir)
		return os.IsNotExist(err)
	}, "cgroup %s not removed", dir)
}

// childOf is the first child of pid (0 when it has none yet).
func childOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	child, _ := strconv.Atoi(f[0])
	return child
}

// openPTY opens a pseudo-terminal: its master (non-blocking, so Close ends
// a read) and the path of its other end, which stays open until the test
// ends.
func openPTY(t *testing.T) (*os.File, string) {
	t.Helper()
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal for systemd's console: %v", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	slave := fmt.Sprintf("/dev/pts/%d", n)
	// Held open by the test: with no other end open (systemd opens and
	// closes the console as it logs) a read of the master fails for good.
	held, err := os.OpenFile(slave, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	t.Cleanup(func() { held.Close() })
	return os.NewFile(uintptr(fd), "ptmx"), slave
}

// crlf drops the carriage returns a terminal adds.
type crlf struct{ w io.Writer }

func (c crlf) Write(p []byte) (int, error) {
	if _, err := c.w.Write(bytes.ReplaceAll(p, []byte("\r"), nil)); err != nil {
		return 0, err
	}
	return len(p), nil
}
