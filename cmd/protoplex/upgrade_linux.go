package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/darkit/protoplex"
	"github.com/darkit/protoplex/internal/handover"
	"golang.org/x/sys/unix"
)

// An upgrade (SIGUSR2, or protoplex -upgrade PID): the running process
// starts the binary at its path with its arguments, giving it one end of a
// socketpair as fd 3 (named by PROTOPLEX_UPGRADE_FD). The new process says
// hello, receives every listening socket (internal/handover), loads and
// checks its configuration, serves them, then acknowledges; only then does
// the old one stop accepting and drain, as on SIGTERM. If the new process
// exits, refuses or does not answer in time, the old one kills it, logs
// why and keeps serving.

// upgradeFDEnv names the new process's end of the handover socket.
const upgradeFDEnv = "PROTOPLEX_UPGRADE_FD"

const (
	// upgradeTimeout bounds each step of the handover, the new process's
	// start (configuration, binds) included.
	upgradeTimeout = 30 * time.Second
	// maxUpgradeSockets bounds what a new process takes: far above what a
	// valid configuration listens on.
	maxUpgradeSockets = 1024
	// maxUpgradeFDs bounds every descriptor a new process takes, moved
	// connections included; each batch of those is also held to the
	// open-files limit (protoplex.AdoptConnections).
	maxUpgradeFDs = 1 << 20
	// maxUpgradeFD bounds the descriptor number PROTOPLEX_UPGRADE_FD names.
	maxUpgradeFD = 1 << 20
	// upgradeWait bounds how long -upgrade waits for the old process to
	// exit: the handover, then its drain.
	upgradeWait = 2 * time.Minute
)

// upgrader is the running process's side of an upgrade.
type upgrader struct {
	exe    string   // the binary's path when this process started
	args   []string // this process's arguments
	pm     *protoplex.ProtocolManager
	log    *slog.Logger
	served []net.Listener // served as given (socket activation)
	stop   func()         // stops this process: drain, then exit
	busy   atomic.Bool

	mu     sync.Mutex
	handed *handedOver // set once this process has handed over
}

// handedOver is what an old process remembers of its upgrade, to say as
// it exits.
type handedOver struct {
	ready time.Time // when the new process acknowledged: it serves
	pid   int       // the new process
	left  int       // the connections this process kept to drain
}

// catchUpgrade catches SIGUSR2 from the start: one that comes before this
// process serves (a script upgrading again right after an upgrade) is kept
// and acted on once upgradeOnSignal runs, instead of being dropped.
func catchUpgrade() chan os.Signal {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR2)
	return sig
}

// upgradeOnSignal upgrades on each SIGUSR2 from sig until ctx ends; a
// successful upgrade calls stop. Its result's exiting says, once this
// process has drained, what the upgrade left it to do.
func upgradeOnSignal(ctx context.Context, sig chan os.Signal, stop func(), pm *protoplex.ProtocolManager, log *slog.Logger, served []net.Listener) *upgrader {
	exe, err := os.Executable()
	if err != nil {
		log.Warn("upgrades unavailable: the binary's path is unknown", "err", err)
		return nil
	}
	u := &upgrader{exe: exe, args: os.Args[1:], pm: pm, log: log, served: served, stop: stop}
	go func() {
		// Once this process has handed over, or drains, a SIGUSR2 (a
		// script retrying) is dropped, as the runtime drops a signal
		// nobody is notified of.
		defer signal.Stop(sig)
		for {
			select {
			case <-sig:
				if !u.busy.CompareAndSwap(false, true) {
					log.Warn("upgrade: SIGUSR2 ignored, an upgrade is in progress")
					continue
				}
				start := time.Now()
				pid, n, hc, err := u.run()
				ready := time.Now()
				if err != nil {
					u.busy.Store(false)
					u.pm.CountUpgrade(false)
					log.Error("upgrade failed: this process keeps serving", "err", err)
					continue
				}
				// The loops' connections move, from a PROXY header being
				// read to forwarding, then their UDP flows; what cannot
				// (in-process handlers, the goroutine data plane) drains
				// here, bounded by the drain timeout.
				mv, err := u.pm.MoveConnections(hc)
				hc.Close()
				if handover.PeerGone(err) {
					// It died (or gave up) after it took the listeners: what
					// it adopted went with it, what did not move is still
					// here, and so are the listeners: serve on, as if this
					// upgrade had failed before its acknowledgement.
					u.reclaim(pid)
					u.busy.Store(false)
					u.pm.CountUpgrade(false)
					log.Error("upgrade failed: the new process went away while connections moved; this process keeps serving",
						"pid", pid, "err", err, "lost_with_it", mv.Conns+mv.Flows, "kept", mv.ConnsLeft, "udp_flows_kept", mv.FlowsLeft)
					continue
				}
				// Only now the monitoring servers go (the new process
				// serves their sockets too) and a unix listener's file
				// is the new process's to remove.
				u.pm.SocketsHandedOver()
				if err != nil {
					log.Warn("upgrade: connections and udp flows not moved stay here and drain", "err", err)
				}
				log.Info("upgrade: the new process serves the listeners and the moved connections; this one stops accepting and drains the rest",
					"pid", pid, "sockets", n, "moved", mv.Conns, "left_to_drain", mv.ConnsLeft, "took", time.Since(start).Round(time.Millisecond),
					"udp_flows_moved", mv.Flows, "udp_flows_left", mv.FlowsLeft)
				u.mu.Lock()
				u.handed = &handedOver{ready: ready, pid: pid, left: mv.ConnsLeft + mv.FlowsLeft}
				u.mu.Unlock()
				u.stop()
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return u
}

// exiting logs, in a process that has handed over and drained, how long it
// ran on after the new process was ready and how many connections it
// drained meanwhile: its last line, the measure of how soon an old
// process is gone.
func (u *upgrader) exiting() {
	if u == nil {
		return
	}
	u.mu.Lock()
	h := u.handed
	u.mu.Unlock()
	if h != nil {
		u.log.Info("upgrade: this process drained and exits", "new_pid", h.pid, "drained", h.left,
			"after_new_ready", time.Since(h.ready).Round(time.Millisecond))
	}
}

// run starts the new process and hands it the sockets; it returns the new
// process's pid, how many sockets it took and the handover socket (the
// caller closes it, after moving connections), once it has acknowledged.
func (u *upgrader) run() (pid, n int, hc *handover.Conn, err error) {
	socks, err := u.pm.Sockets(u.served...)
	if err != nil {
		return 0, 0, nil, err
	}
	defer func() {
		for _, s := range socks {
			unix.Close(s.FD)
		}
	}()
	conn, peer, err := handover.Pair(handover.Limits{Timeout: upgradeTimeout})
	if err != nil {
		return 0, 0, nil, err
	}
	defer func() {
		if err != nil {
			conn.Close()
		}
	}()
	command := func(sibling bool) *exec.Cmd {
		cmd := exec.Command(u.exe, u.args...)
		cmd.Env = append(withoutEnv(os.Environ(), upgradeFDEnv), upgradeFDEnv+"=3")
		cmd.ExtraFiles = []*os.File{peer} // fd 3
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		if sibling {
			cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_PARENT}
		}
		return cmd
	}
	// Under a service manager (NOTIFY_SOCKET) the new process is started as
	// the manager's child, this one's sibling (CLONE_PARENT): systemd takes
	// the MAINPID= of a process that is not its child ("Supervising process
	// N which is not our child") but does not wait for it on stop, and
	// sends SIGKILL right after SIGTERM, cutting the drain short.
	sibling := os.Getenv("NOTIFY_SOCKET") != ""
	cmd := command(sibling)
	err = cmd.Start()
	if sibling && errors.Is(err, syscall.EINVAL) { // PID 1 of a namespace has no parent to share
		sibling = false
		cmd = command(false)
		err = cmd.Start()
	}
	peer.Close()
	if err != nil {
		return 0, 0, nil, fmt.Errorf("starting %s: %w", u.exe, err)
	}
	exited := make(chan error, 1)
	if sibling {
		// Its exit status goes to the manager (and its journal): here
		// the handover socket's end says it exited.
		close(exited)
		defer cmd.Process.Release()
	} else {
		go func() { exited <- cmd.Wait() }()
	}
	fail := func(err error) (int, int, *handover.Conn, error) {
		_ = cmd.Process.Kill() // it may hold the sockets: it must not serve beside this process
		if werr := <-exited; werr != nil {
			err = fmt.Errorf("%w (new process: %v)", err, werr)
		}
		return 0, 0, nil, fmt.Errorf("pid %d: %w", cmd.Process.Pid, err)
	}
	hello, _, err := conn.Recv()
	if errors.Is(err, handover.ErrVersion) {
		_ = conn.Send(handover.Message{Kind: handover.Refuse, Note: err.Error()}, nil)
		return fail(fmt.Errorf("the new binary speaks another handover format: %w", err))
	}
	if errors.Is(err, io.EOF) {
		return fail(errors.New("the new process exited before it said hello (its log says why)"))
	}
	if err != nil {
		return fail(fmt.Errorf("no hello: %w", err))
	}
	if hello.Kind != handover.Hello {
		return fail(fmt.Errorf("a %s instead of a hello", hello.Kind))
	}
	if v := conn.Version(); v < handover.Version {
		// A binary of an older format (a downgrade): this process moves
		// its connections only with the commit its format has. The
		// Refuse is framed as v, so that binary reads it and exits.
		why := fmt.Sprintf("this process hands over in format %d; the new binary speaks format %d (an older release): downgrade by a restart", handover.Version, v)
		_ = conn.Send(handover.Message{Kind: handover.Refuse, Note: why}, nil)
		return fail(errors.New(why))
	}
	if err := sendSockets(conn, socks); err != nil {
		return fail(err)
	}
	ack, _, err := conn.Recv()
	switch {
	case errors.Is(err, io.EOF):
		return fail(errors.New("the new process exited before it was ready (its log says why)"))
	case err != nil:
		return fail(fmt.Errorf("no acknowledgement: %w", err))
	case ack.Kind == handover.Refuse:
		return fail(fmt.Errorf("the new process refused: %s", ack.Note))
	case ack.Kind != handover.Ack:
		return fail(fmt.Errorf("a %s instead of an acknowledgement", ack.Kind))
	}
	return cmd.Process.Pid, int(ack.Count), conn, nil
}

// reclaimWait bounds the wait for a new process that went away to be
// gone for good.
const reclaimWait = 5 * time.Second

// reclaim makes sure the new process pid that went away mid-move is gone
// (it may still hold the listeners: it must not serve beside this one),
// and tells a service manager that this process is the main one again.
func (u *upgrader) reclaim(pid int) {
	_ = syscall.Kill(pid, syscall.SIGKILL)
	deadline := time.Now().Add(reclaimWait)
	for running(pid) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // another process's end: nothing to wait on
	}
	if err := sdNotify(fmt.Sprintf("MAINPID=%d\nREADY=1", os.Getpid())); err != nil {
		u.log.Warn("sd_notify failed", "err", err)
	}
}

// sendSockets sends socks in messages of at most MaxFDsPerMessage, then
// Done.
func sendSockets(conn *handover.Conn, socks []protoplex.Socket) error {
	total := len(socks)
	types := map[string]handover.FDType{"tcp": handover.TCPListener, "unix": handover.UnixListener, "udp": handover.UDPSocket}
	for len(socks) > 0 {
		batch := socks[:min(len(socks), handover.MaxFDsPerMessage)]
		socks = socks[len(batch):]
		m := handover.Message{Kind: handover.FDs}
		fds := make([]int, len(batch))
		for i, s := range batch {
			m.Records = append(m.Records, handover.Record{Type: types[s.Network], Name: s.Key})
			fds[i] = s.FD
		}
		if err := conn.Send(m, fds); err != nil {
			return err
		}
	}
	return conn.Send(handover.Message{Kind: handover.Done, Count: uint32(total)}, nil)
}

func withoutEnv(env []string, key string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// upgradeChild is the new process's side: what it was handed, kept until
// it serves and acknowledges.
type upgradeChild struct {
	start      time.Time // when this process took the handover socket
	conn       *handover.Conn
	files      map[string]*os.File
	activation []net.Listener // served as given, as under socket activation
	count      int
	acked      bool
}

// takeUpgrade receives the sockets when this process was started by an
// upgrade (PROTOPLEX_UPGRADE_FD); nil when it was not.
func takeUpgrade() (*upgradeChild, error) {
	v, ok := os.LookupEnv(upgradeFDEnv)
	os.Unsetenv(upgradeFDEnv) // a later upgrade of this process names its own
	if !ok {
		return nil, nil
	}
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 || fd > maxUpgradeFD {
		return nil, fmt.Errorf("protoplex: %s=%q: want a descriptor number from 3", upgradeFDEnv, v)
	}
	start := time.Now()
	conn, err := handover.FileConn(os.NewFile(uintptr(fd), "handover"), handover.Limits{Timeout: upgradeTimeout, MaxTotalFDs: maxUpgradeFDs})
	if err != nil {
		return nil, fmt.Errorf("protoplex: upgrade: %w", err)
	}
	u := &upgradeChild{start: start, conn: conn, files: map[string]*os.File{}}
	if err := u.receive(); err != nil {
		u.abandon(err.Error())
		return nil, fmt.Errorf("protoplex: upgrade: %w", err)
	}
	return u, nil
}

func (u *upgradeChild) receive() error {
	// Framed as the first release's format, naming the highest this
	// binary speaks: an old process of any release reads it, and picks.
	if err := u.conn.SendHello(versionLine()); err != nil {
		return err
	}
	for {
		m, files, err := u.conn.Recv()
		if err != nil {
			return err
		}
		switch m.Kind {
		case handover.FDs:
			if u.count+len(files) > maxUpgradeSockets {
				closeFiles(files)
				return fmt.Errorf("more than %d sockets handed over", maxUpgradeSockets)
			}
			for i, f := range files {
				name := m.Records[i].Name
				if _, dup := u.files[name]; dup {
					closeFiles(files[i:])
					return fmt.Errorf("%q handed over twice", name)
				}
				u.files[name] = f
				u.count++
			}
		case handover.Done:
			if int(m.Count) != u.count {
				return fmt.Errorf("%d sockets received, the old process sent %d", u.count, m.Count)
			}
			return u.takeActivation()
		default:
			return fmt.Errorf("a %s message during the handover", m.Kind)
		}
	}
}

// takeActivation turns the sockets the old process served as given into
// listeners served the same way.
func (u *upgradeChild) takeActivation() error {
	for i := 0; ; i++ {
		key := protoplex.RoleActivation + " " + strconv.Itoa(i)
		f, ok := u.files[key]
		if !ok {
			return nil
		}
		delete(u.files, key)
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		u.activation = append(u.activation, ln)
	}
}

// options make a manager take the sockets handed over, and hold its UDP
// listeners unread until the old process's flows moved in.
func (u *upgradeChild) options() []protoplex.Option {
	if u == nil {
		return nil
	}
	return []protoplex.Option{protoplex.WithInheritedSockets(u.files), protoplex.WithHeldUDP()}
}

// listeners returns the listeners to serve as given (socket activation in
// the old process).
func (u *upgradeChild) listeners() []net.Listener {
	if u == nil {
		return nil
	}
	return u.activation
}

// ready tells the service manager (sd_notify: READY=1) that this process
// serves; after an upgrade it is the main process now (MAINPID=), and it
// acknowledges, so the old one stops accepting.
func (u *upgradeChild) ready(pm *protoplex.ProtocolManager, log *slog.Logger) {
	if u == nil {
		if err := sdNotify("READY=1"); err != nil {
			log.Warn("sd_notify failed", "err", err)
		}
		return
	}
	if u.acked {
		return
	}
	u.acked = true
	// Before the acknowledgement: the old process must not exit while the
	// service manager still takes it for the main one.
	if err := sdNotify(fmt.Sprintf("MAINPID=%d\nREADY=1", os.Getpid())); err != nil {
		log.Warn("sd_notify failed", "err", err)
	}
	left := pm.InheritedLeft()
	for _, f := range u.files {
		f.Close() // the manager took duplicates of those it serves
	}
	if err := u.conn.Send(handover.Message{Kind: handover.Ack, Count: uint32(u.count)}, nil); err != nil {
		log.Error("upgrade: the acknowledgement was not sent; the old process will stop this one", "err", err)
		pm.ReleaseUDP()
	} else {
		pm.CountUpgrade(true)
		log.Info("upgrade: serving the sockets the old process handed over", "sockets", u.count, "unused", left)
		moved, kept, err := pm.AdoptConnections(u.conn, u.start) // and the UDP flows
		if err != nil {
			log.Warn("upgrade: taking the old process's connections stopped; it keeps those not moved", "err", err)
		}
		log.Info("upgrade: connections moved in", "moved", moved, "left_in_old_process", kept,
			"took", time.Since(u.start).Round(time.Millisecond))
	}
	u.conn.Close()
}

// abandon tells the old process this one will not take over, if it has
// not acknowledged, and closes what it was given.
func (u *upgradeChild) abandon(why string) {
	if u == nil || u.acked {
		return
	}
	u.acked = true
	_ = u.conn.Send(handover.Message{Kind: handover.Refuse, Note: why}, nil)
	for _, f := range u.files {
		f.Close()
	}
	for _, ln := range u.activation {
		ln.Close()
	}
	u.conn.Close()
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// upgradeCommand is protoplex -upgrade PID: it asks the protoplex
// process PID to upgrade (SIGUSR2) and waits until it has exited, which
// it does once the new process serves and its own connections drained.
func upgradeCommand(pid int, wait time.Duration, stdout, stderr io.Writer) int {
	if pid <= 1 {
		fmt.Fprintf(stderr, "protoplex: -upgrade %d: want the pid of a running protoplex\n", pid)
		return exitUsage
	}
	if err := syscall.Kill(pid, syscall.SIGUSR2); err != nil {
		fmt.Fprintf(stderr, "protoplex: -upgrade %d: %v\n", pid, err)
		return exitFail
	}
	deadline := time.Now().Add(wait)
	for running(pid) {
		if time.Now().After(deadline) {
			fmt.Fprintf(stderr, "protoplex: -upgrade %d: still running after %v: the upgrade failed (its log says why) or its connections are still draining\n", pid, wait)
			return exitFail
		}
		time.Sleep(100 * time.Millisecond) // polling another process: nothing to wait on
	}
	fmt.Fprintf(stdout, "upgraded: pid %d handed its listeners over and exited\n", pid)
	return exitOK
}

// running reports whether pid is a live process (not a zombie).
func running(pid int) bool { return runningAt("/proc/" + strconv.Itoa(pid)) }

// runningAt reports whether the process whose /proc directory is dir is
// live (not a zombie).
func runningAt(dir string) bool {
	b, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses, which may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

// maxNotifySocket bounds NOTIFY_SOCKET: a sun_path holds 108 bytes.
const maxNotifySocket = 108

// sdNotify sends state to the service manager (sd_notify(3)) when
// NOTIFY_SOCKET names its socket; nothing otherwise. A name starting with
// '@' is in the abstract namespace, as Go's net reads it too.
func sdNotify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	if len(addr) > maxNotifySocket || (addr[0] != '/' && addr[0] != '@') {
		return fmt.Errorf("NOTIFY_SOCKET=%q: want an absolute path or @name of at most %d bytes", addr, maxNotifySocket)
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_, err = c.Write([]byte(state))
	return err
}
