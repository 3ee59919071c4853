//go:build linux

package udp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/darkit/protoplex/internal/metrics"
	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/internal/udp/udptest"
)

// stepLoop is a Loop the test turns by hand, on its own goroutine: work
// posted runs at once, round reads every watched socket as a loop's round
// does and, unless told to hold them, runs the before-wait functions
// (the batched replies leave then). Timers never fire.
type stepLoop struct {
	watched map[int]func()
	hooks   []*func()
}

func newStepLoop() *stepLoop { return &stepLoop{watched: map[int]func(){}} }

func (s *stepLoop) Post(fn func()) bool { fn(); return true }

func (s *stepLoop) Watch(fd int, fn func()) error { s.watched[fd] = fn; return nil }

func (s *stepLoop) Unwatch(fd int) { delete(s.watched, fd) }

func (s *stepLoop) Forget(fd int) { delete(s.watched, fd) }

func (s *stepLoop) After(time.Duration, func()) {}

func (s *stepLoop) BeforeWait(fn func()) func() {
	h := &fn
	s.hooks = append(s.hooks, h)
	return func() {
		for i, x := range s.hooks {
			if x == h {
				s.hooks = append(s.hooks[:i], s.hooks[i+1:]...)
				return
			}
		}
	}
}

// round reads what every watched socket holds; with flush, the round
// ends as a loop's does before it waits.
func (s *stepLoop) round(flush bool) {
	fns := make([]func(), 0, len(s.watched))
	for _, fn := range s.watched {
		fns = append(fns, fn)
	}
	for _, fn := range fns {
		fn()
	}
	if flush {
		for _, h := range s.hooks {
			(*h)()
		}
	}
}

// stepEngine serves one route to an echo server on a listener run by a
// stepLoop, with s and the access log on.
func stepEngine(t *testing.T, responses int, s Settings) (*Engine, *stepLoop, *net.UDPConn, *metrics.UDP, *testnet.Buffer) {
	t.Helper()
	st := metrics.New().UDP
	table := NewTable([]Route{{Name: "A", Label: "A", Detect: prefix("q"), Targets: []string{udptest.Echo(t, false)}}}, st)
	table.Routes()[0].state.responses = responses
	lp := newStepLoop()
	log := &testnet.Buffer{}
	s.AccessLog = true
	e := New(Options{Table: func() *Table { return table }, Settings: func() Settings { return s }, Stats: st,
		Sweep: time.Hour, Log: slog.New(slog.NewTextHandler(log, nil)), Sockets: 1,
		Loops: func() ([]Loop, func()) { return []Loop{lp}, func() {} }})
	t.Cleanup(e.Close)
	a, err := e.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if e.lns[0].drv == nil {
		t.Fatal("the listener is not on the loop")
	}
	return e, lp, dial(t, a.(*net.UDPAddr)), st, log
}

// nothingWaits reports that c has no datagram to read.
func nothingWaits(t *testing.T, c *net.UDPConn) bool {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var rerr error
	_ = rc.Control(func(s uintptr) { _, _, rerr = unix.Recvfrom(int(s), make([]byte, 1), unix.MSG_DONTWAIT|unix.MSG_PEEK) })
	return rerr == unix.EAGAIN
}

// TestBatchedReplyFlushedBeforePause: a reply waits in the send batch
// until the round ends, uncounted, and the flow it answered has left the
// table without ending yet; pausing the listeners (an upgrade's first
// step) sends it first: the client gets it, it is counted, and only then
// does the flow end, with its access line counting it.
func TestBatchedReplyFlushedBeforePause(t *testing.T) {
	e, lp, c, st, log := stepEngine(t, 1, Settings{})
	ln := e.lns[0]
	if _, err := c.Write([]byte("q1")); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 5*time.Second, func() bool { lp.round(false); return ln.drv.tx.n == 1 }, "the reply is not in the send batch")
	if !nothingWaits(t, c) {
		t.Fatal("the client got the reply before the round ended")
	}
	if got := value(t, st.Route("A").DatagramsDn); got != 0 {
		t.Fatalf("a reply still in the batch is counted: %v", got)
	}
	if n, answered := e.Flows(), value(t, st.Answered); n != 0 || answered != 0 || strings.Contains(log.String(), "udp flow ended") {
		t.Fatalf("before the send: %d flows in the table (want 0), %v answered and log %q (want none yet)", n, answered, log.String())
	}
	e.PauseListeners()
	if got := read(t, c); got != "q1" {
		t.Fatalf("reply %q", got)
	}
	if got, answered := value(t, st.Route("A").DatagramsDn), value(t, st.Answered); got != 1 || answered != 1 {
		t.Fatalf("after the pause: %v datagrams down, %v answered; want 1, 1", got, answered)
	}
	if line := log.String(); !strings.Contains(line, "datagrams_down=1") || !strings.Contains(line, "close=answered") {
		t.Fatalf("access line %q: the flow ended before its reply was counted", line)
	}
	e.ResumeListeners()
}

// TestSendBatchFullFlushes: replies past sendBatch in one round send the
// full batch first (in order), the rest when the round ends; every reply
// reaches the client once, in order, and is counted.
func TestSendBatchFullFlushes(t *testing.T) {
	e, lp, c, st, _ := stepEngine(t, 0, Settings{})
	ln := e.lns[0]
	const n = sendBatch + 6
	for i := range n {
		if _, err := c.Write(fmt.Appendf(nil, "q%03d", i)); err != nil {
			t.Fatal(err)
		}
	}
	down := func() float64 { return value(t, st.Route("A").DatagramsDn) }
	testnet.Eventually(t, 5*time.Second, func() bool { lp.round(false); return down()+float64(ln.drv.tx.n) == n },
		"replies forwarded: %v sent, %d batched, want %d", testnet.Later(func() string { return fmt.Sprint(down()) }), ln.drv.tx.n, n)
	if sent := down(); sent < sendBatch || sent > n-1 {
		t.Fatalf("%v replies sent before the round ended, want at least a full batch (%d) and not all", sent, sendBatch)
	}
	lp.round(true)
	if got := down(); got != n {
		t.Fatalf("%v replies counted after the round, want %d", got, n)
	}
	for i := range n {
		if got, want := read(t, c), fmt.Sprintf("q%03d", i); got != want {
			t.Fatalf("reply %d is %q, want %q", i, got, want)
		}
	}
	if up := value(t, st.Route("A").DatagramsUp); up != n {
		t.Fatalf("%v datagrams counted up, want %d", up, n)
	}
}

// TestEvictedFlowCountsItsBatchedReply: a flow evicted for room while its
// reply waits in the send batch has the reply sent first, so its access
// line counts it.
func TestEvictedFlowCountsItsBatchedReply(t *testing.T) {
	e, lp, c, st, log := stepEngine(t, 0, Settings{MaxFlows: 1})
	ln := e.lns[0]
	if _, err := c.Write([]byte("q1")); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 5*time.Second, func() bool { lp.round(false); return ln.drv.tx.n == 1 }, "the reply is not in the send batch")
	other := dial(t, c.RemoteAddr().(*net.UDPAddr))
	if _, err := other.Write([]byte("q2")); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 5*time.Second, func() bool { lp.round(false); return value(t, st.Evicted) == 1 }, "the first flow was not evicted")
	if got := read(t, c); got != "q1" {
		t.Fatalf("the evicted flow's reply %q", got)
	}
	if line := log.String(); !strings.Contains(line, "close=evicted") || !strings.Contains(line, "datagrams_down=1") {
		t.Fatalf("access line %q: the evicted flow's batched reply is not counted", line)
	}
	lp.round(true)
	testnet.Eventually(t, 5*time.Second, func() bool { lp.round(true); return value(t, st.Route("A").DatagramsDn) == 2 }, "the second reply")
	if got := read(t, other); got != "q2" {
		t.Fatalf("the second flow's reply %q", got)
	}
}
