//go:build linux

package e2e

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// upgradeBound bounds each wait of the upgrade test: a loaded machine
// starts the new process, moves hundreds of connections and drains the
// rest well within it; it only matters when the test fails.
const upgradeBound = 60 * time.Second

// TestUpgradeMovesConnections: the real binary is upgraded 5 times in a
// row (SIGUSR2) while it forwards 200 bulk streams to an echo server —
// every tenth with megabytes in flight, spliced, at each upgrade — and
// holds 200 idle sessions of the real ssh to a real sshd. Every stream
// comes back byte for byte in both directions and every session still
// answers after the last upgrade: the event loops' connections moved to
// each new process. A load of new connections meanwhile sees no failure,
// a client that had sent half an SSH banner before the first upgrade is
// served once it sends the rest (it moved with the bytes it had sent),
// and each old process is gone once nothing is left for it to drain, its
// last line saying what it drained and how long after the new process was
// ready it went (logged, with the rate the load reached: measured, not
// asserted; this process is that load's bottleneck, so the rate of 2,000
// new connections/s across upgrades is TestUpgradeUnderLoad's).
func TestUpgradeMovesConnections(t *testing.T) {
	streams, sessions, large := 200, 200, 2<<20
	if testing.Short() {
		streams, sessions, large = 20, 10, 512<<10
	}
	const upgrades = 5
	sshBin := requireBinary(t, "ssh")
	sshd, sshArgs := startSSHD(t)
	echo := testnet.Echo(t)
	bin := buildCLI(t)
	metricsPort := testnet.FreePort(t)
	cfg := filepath.Join(t.TempDir(), "protoplex.yaml")
	testnet.WriteFile(t, cfg, fmt.Sprintf(`server:
  listen: "127.0.0.1:0"
  graceful_shutdown_timeout: "60s"
protocols:
  - name: SSH
    target: %q
  - name: bulk
    match_start_bytes: ["42554c4b"] # BULK
    target: %q
monitoring:
  bind_address: 127.0.0.1
  metrics_port: %d
  health_check_port: 0
`, sshd, echo, metricsPort))
	addr, p, _ := startCLI(t, bin, "-config", cfg)
	pid := p.Cmd.Process.Pid
	t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL) }) // the new processes are in its group

	// The SSH sessions: ssh runs cat, so a line written comes back.
	ss := make([]sshSession, sessions)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 6) // under sshd's MaxStartups (10): none is dropped while it logs in
	errs := make(chan error, sessions+streams+10)
	for i := range ss {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			cmd := exec.Command(sshBin, append(append([]string{}, sshArgs...), "-p", port(addr), "root@127.0.0.1", "cat")...)
			in, _ := cmd.StdinPipe()
			out, _ := cmd.StdoutPipe()
			proc := testnet.StartProcess(t, cmd)
			ss[i] = sshSession{in: in, out: bufio.NewReader(out)}
			if err := ss[i].roundTrip(fmt.Sprintf("before %d", i)); err != nil {
				errs <- fmt.Errorf("session %d before the upgrades: %v; ssh: %s", i, err, proc.Out)
			}
		})
	}
	wg.Wait()
	failIf(t, errs)

	// The bulk streams: each writes a round when its gate opens, and
	// reads the echo beside it, checking every byte.
	gates := make([]chan struct{}, upgrades+1)
	for i := range gates {
		gates[i] = make(chan struct{})
	}
	pattern := make([]byte, 1<<20+7) // not a power of two: a byte out of place shows
	_, _ = rand.NewChaCha8([32]byte{7}).Read(pattern)
	var streamsDone sync.WaitGroup
	for s := range streams {
		round := 4 << 10
		if s%10 == 0 {
			round = large
		}
		c, err := net.DialTimeout("tcp", addr, upgradeBound)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(5 * upgradeBound))
		if _, err := c.Write([]byte("BULK")); err != nil {
			t.Fatal(err)
		}
		streamsDone.Go(func() {
			total := 4 + len(gates)*round
			got, err := checkEcho(c, pattern, s*7919, total)
			if err != nil || got != total {
				errs <- fmt.Errorf("stream %d: %d of %d bytes back: %v", s, got, total, err)
			}
		})
		streamsDone.Go(func() {
			pos := s * 7919
			buf := make([]byte, 32<<10)
			for _, g := range gates {
				<-g
				for n := round; n > 0; {
					k := min(n, len(buf))
					for j := range k {
						buf[j] = pattern[(pos+j)%len(pattern)]
					}
					if _, err := c.Write(buf[:k]); err != nil {
						errs <- fmt.Errorf("stream %d: write: %v", s, err)
						return
					}
					pos += k
					n -= k
				}
			}
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				errs <- fmt.Errorf("stream %d: %v", s, err)
			}
		})
	}

	l := startUpgradeLoad(addr, upgradeLoadWorkers)
	defer l.end()
	testnet.Eventually(t, upgradeBound, func() bool { return l.ok.Load() > 50 }, "the load does not get through: %v", testnet.Later(l.err))

	// Half an SSH banner: not yet identified when the first upgrade
	// comes; it moves with the two bytes it sent.
	half, err := net.DialTimeout("tcp", addr, upgradeBound)
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	_ = half.SetDeadline(time.Now().Add(upgradeBound))
	if _, err := io.WriteString(half, "SS"); err != nil {
		t.Fatal(err)
	}

	current := pid
	window, windowOK := time.Now(), l.ok.Load() // the load's rate during the upgrades
	upgraded := regexp.MustCompile(`upgrade: the new process serves the listeners[^\n]*pid=(\d+)[^\n]* moved=(\d+)`)
	for u := 1; u <= upgrades; u++ {
		close(gates[u-1]) // a round in flight while the connections move
		old := current
		syscall.Kill(old, syscall.SIGUSR2)
		var m [][]string
		testnet.Eventually(t, upgradeBound, func() bool {
			m = upgraded.FindAllStringSubmatch(p.Out.String(), -1)
			return len(m) >= u
		}, "upgrade %d not logged; stderr:\n%s", u, testnet.Later(p.Out.String))
		current, _ = strconv.Atoi(m[u-1][1])
		if moved, _ := strconv.Atoi(m[u-1][2]); moved < streams+sessions {
			t.Errorf("upgrade %d moved %d connections, want at least %d", u, moved, streams+sessions)
		}
		if u == 1 {
			if _, err := io.WriteString(half, "H-2.0-half\r\n"); err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(half).ReadString('\n')
			if err != nil || !strings.HasPrefix(line, "SSH-2.0-OpenSSH") {
				t.Errorf("the client mid-identification across the upgrade: %q, %v", line, err)
			}
			half.Close()
		}
		testnet.Eventually(t, upgradeBound, func() bool { return !alive(old) },
			"the old process %d still runs after upgrade %d; stderr:\n%s", old, u, testnet.Later(p.Out.String))
		// Its last line says what it drained and how long after the new
		// process was ready it went.
		exits := fmt.Sprintf(`upgrade: this process drained and exits" new_pid=%d drained=`, current)
		testnet.Eventually(t, upgradeBound, func() bool { return strings.Contains(p.Out.String(), exits) }, // the line may still be in the pipe
			"the old process %d did not say it drained and exits after upgrade %d; stderr:\n%s", old, u, testnet.Later(p.Out.String))
	}
	rate := float64(l.ok.Load()-windowOK) / time.Since(window).Seconds()
	close(gates[upgrades])

	done := make(chan struct{})
	go func() { streamsDone.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * upgradeBound):
		t.Fatal("the bulk streams did not end")
	}
	for i := range ss {
		wg.Go(func() {
			if err := ss[i].roundTrip(fmt.Sprintf("after %d", i)); err != nil {
				errs <- fmt.Errorf("session %d after %d upgrades: %v", i, upgrades, err)
			}
		})
	}
	wg.Wait()
	l.end()
	l.stop = make(chan struct{}) // for the deferred end
	failIf(t, errs)
	if n := l.failed.Load(); n != 0 {
		t.Errorf("%d of %d new connections failed during the upgrades, the first: %v", n, n+l.ok.Load(), l.err())
	}
	t.Logf("%d streams and %d ssh sessions across %d upgrades; %d new connections meanwhile, none failed", streams, sessions, upgrades, l.ok.Load())
	// Measured, not asserted: the rate this load reached on this machine.
	t.Logf("the load of new connections ran at %.0f/s (%d workers, one connection at a time each) from the first SIGUSR2 until the last old process was gone", rate, upgradeLoadWorkers)
	logUpgrades(t, p.Out.String())
	if !alive(current) {
		t.Fatalf("the newest process (%d) does not run; stderr:\n%s", current, p.Out)
	}
	if v := testnet.Metric(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort), "protoplex_upgrade_connections_moved_total"); v < float64(streams+sessions) {
		t.Errorf("the newest process counts %v connections moved in", v)
	}
}

// logUpgrades logs what the binary's stderr says of each upgrade: the
// switch (connections moved, left to drain, how long from the signal) and
// each old process's last line (what it drained, how long after the new
// one was ready it went). Measured, not asserted.
func logUpgrades(t *testing.T, stderr string) {
	t.Helper()
	for _, m := range regexp.MustCompile(`upgrade: the new process serves the listeners[^\n]* moved=(\d+) left_to_drain=(\d+) took=(\S+)`).FindAllStringSubmatch(stderr, -1) {
		t.Logf("upgrade: %s moved, %s left to drain, %s from SIGUSR2 to the last batch acknowledged", m[1], m[2], m[3])
	}
	for _, m := range regexp.MustCompile(`upgrade: this process drained and exits" new_pid=\d+ drained=(\d+) after_new_ready=(\S+)`).FindAllStringSubmatch(stderr, -1) {
		t.Logf("old process: drained %s, gone %s after the new one was ready", m[1], m[2])
	}
}

// sshSession is an ssh process running cat on the far side.
type sshSession struct {
	in  io.WriteCloser
	out *bufio.Reader
}

// roundTrip writes line through the session and reads it back.
func (s sshSession) roundTrip(line string) error {
	done := make(chan error, 1)
	go func() {
		if _, err := io.WriteString(s.in, line+"\n"); err != nil {
			done <- err
			return
		}
		got, err := s.out.ReadString('\n')
		if err == nil && got != line+"\n" {
			err = fmt.Errorf("answer %q", got)
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(upgradeBound):
		return fmt.Errorf("no answer within %v", upgradeBound)
	}
}

// checkEcho reads c to its end, checking each byte: "BULK", then the
// pattern from offset; it returns how many bytes came.
func checkEcho(c net.Conn, pattern []byte, offset, want int) (int, error) {
	r := bufio.NewReaderSize(c, 64<<10)
	head := make([]byte, 4)
	if _, err := io.ReadFull(r, head); err != nil || string(head) != "BULK" {
		return 0, fmt.Errorf("head %q: %v", head, err)
	}
	n := 4
	buf := make([]byte, 64<<10)
	for {
		k, err := r.Read(buf)
		for j := range k {
			if buf[j] != pattern[(offset+n-4+j)%len(pattern)] {
				return n + j, fmt.Errorf("byte %d differs", n+j)
			}
		}
		n += k
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if n > want {
			return n, fmt.Errorf("more than %d bytes", want)
		}
	}
}

// failIf fails t with every error waiting in errs.
func failIf(t *testing.T, errs chan error) {
	t.Helper()
	for {
		select {
		case err := <-errs:
			t.Error(err)
		default:
			if t.Failed() {
				t.FailNow()
			}
			return
		}
	}
}

// alive reports whether pid is a live process (not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

// upgradeLoadWorkers is how many connections the load has open at once.
const upgradeLoadWorkers = 4

// upgradeLoad opens connections one after another from several
// goroutines, each sending a bulk line and reading its echo, until end;
// every one that fails (refused, reset, a wrong answer) is counted.
type upgradeLoad struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	first      error
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startUpgradeLoad(addr string, workers int) *upgradeLoad {
	l := &upgradeLoad{stop: make(chan struct{})}
	for range workers {
		l.wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				if err := echoOnce(addr); err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					if l.first == nil {
						l.first = err
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

func (l *upgradeLoad) end() { close(l.stop); l.wg.Wait() }

func (l *upgradeLoad) err() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprint(l.first)
}

func echoOnce(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	const msg = "BULK load\n"
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != msg {
		return fmt.Errorf("answer %q: %v", line, err)
	}
	return nil
}
