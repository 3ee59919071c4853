//go:build linux

package evloop_test

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/bufpool"
	"github.com/darkit/protoplex/internal/config"
	"github.com/darkit/protoplex/internal/conntrack"
	"github.com/darkit/protoplex/internal/evloop"
	"github.com/darkit/protoplex/internal/guard"
	"github.com/darkit/protoplex/internal/metrics"
	"github.com/darkit/protoplex/internal/routing"
	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/internal/udp"
	"github.com/darkit/protoplex/protocols"
)

// bound is how long any single wait of these tests may take before it
// fails: generous for a loaded machine, it only matters when a test fails.
const bound = 10 * time.Second

// rig is a Plane serving one loopback listener, with the collectors, guard,
// connection set and routing table a manager gives it.
type rig struct {
	tb    testing.TB
	addr  string // where clients connect
	stats *metrics.Stats
	conns *conntrack.Set
	table *routing.Table
	log   *testnet.Buffer // every log line, access lines included
	plane *evloop.Plane
	// With setup.udp: a UDP engine whose listener and flows the plane's
	// loops run, on udpAddr.
	udp     *udp.Engine
	udpAddr *net.UDPAddr
	// udpTable, once set (reloadUDP), is the routing table the UDP engine
	// follows instead of table: a reload as the engine sees it.
	udpTable atomic.Pointer[routing.Table]
	ctx      context.Context
}

// setup is what a test changes before its rig starts.
type setup struct {
	srv     config.Server   // config.DefaultServer with the access log on
	trusted config.Prefixes // the networks trusted to send a PROXY header
	guard   guard.Config
	env     evloop.Env // SpliceAfter and QuickAck are kept; the rest is the rig's
	loops   int        // 2 by default
	level   slog.Level // of the log; debug by default
	// sndbuf, when set, is the listener's SO_SNDBUF, which the sockets it
	// accepts inherit (and no longer grow): it bounds how much the plane's
	// socket towards a client holds that the client has not read.
	sndbuf int
	// listen, when set, opens the listener served instead of a TCP one on
	// 127.0.0.1 (and closes it when the test ends).
	listen func(testing.TB) net.Listener
	// udp starts a UDP engine on the loops, routing the protocols with a
	// datagram detector, listening on udpListen (127.0.0.1:0 by default).
	udp       bool
	udpListen string
}

// newRig starts a plane routing protos; opts adjust the setup first. The
// plane, its listener, the guard and the backend sets are stopped when the
// test ends, after every connection still open is closed.
func newRig(tb testing.TB, protos []*protocols.Protocol, opts ...func(*setup)) *rig {
	tb.Helper()
	s := setup{srv: config.DefaultServer(), loops: 2, level: slog.LevelDebug}
	s.srv.AccessLog = true
	for _, o := range opts {
		o(&s)
	}
	r := &rig{tb: tb, stats: metrics.New(), conns: conntrack.New(), log: &testnet.Buffer{}}
	log := slog.New(slog.NewTextHandler(r.log, &slog.HandlerOptions{Level: s.level}))
	g, err := guard.New(s.guard, log, time.Now)
	if err != nil {
		tb.Fatal(err)
	}
	plan, err := routing.Build(protos, 0, nil, r.stats, log)
	if err != nil {
		g.Close()
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.table = plan.Commit(ctx)
	r.ctx = ctx
	srv, trusted := s.srv, s.trusted
	env := s.env
	env.Ctx, env.Log, env.CapLog = ctx, log, guard.NewRateLimitedLogger(log, 1, time.Now)
	env.Stats, env.Guard, env.Conns, env.Bufs = r.stats, g, r.conns, bufpool.New()
	env.Settings = func() (*config.Server, config.Prefixes) { return &srv, trusted }
	env.Routing = func() *routing.Table { return r.table }
	env.SettleWait = 20 * time.Millisecond
	r.plane, err = evloop.New(env, s.loops)
	if err != nil {
		r.table.Close()
		g.Close()
		cancel()
		tb.Fatal(err)
	}
	listen := testnet.Listen
	if s.listen != nil {
		listen = s.listen
	}
	ln := listen(tb)
	r.addr = ln.Addr().String()
	if s.sndbuf > 0 {
		rc, err := ln.(*net.TCPListener).SyscallConn()
		if err == nil {
			err = rc.Control(func(fd uintptr) {
				err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, s.sndbuf)
			})
		}
		if err != nil {
			tb.Fatal(err)
		}
	}
	if s.udp {
		routes := func() *routing.Table {
			if t := r.udpTable.Load(); t != nil {
				return t
			}
			return r.table
		}
		uo := udp.ForManager(ctx, routes, func() udp.Settings { return udp.Settings{AccessLog: true} }, g, r.stats.UDP, log)
		uo.Loops = func() ([]udp.Loop, func()) { return r.plane.UDPLoops(), nil }
		uo.Sockets = 2
		r.udp = udp.New(uo)
		a, err := r.udp.Listen(ctx, cmp.Or(s.udpListen, "127.0.0.1:0"))
		if err != nil {
			tb.Fatal(err)
		}
		r.udpAddr = a.(*net.UDPAddr)
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- r.plane.Serve(sctx, ln) }()
	tb.Cleanup(func() {
		defer cancel()
		defer g.Close()
		defer r.table.Close()
		stop()
		// ErrClosed: the test closed the plane before Serve joined it.
		if err := waitFor(served); err != nil && !errors.Is(err, evloop.ErrClosed) {
			tb.Errorf("Serve: %v", err)
		}
		r.conns.CloseAll()
		wctx, wcancel := context.WithTimeout(context.Background(), bound)
		defer wcancel()
		if err := r.conns.Wait(wctx); err != nil {
			tb.Errorf("connections still tracked after CloseAll: %d", r.conns.Len())
			return // Close would wait for them forever
		}
		if r.udp != nil {
			r.udp.Close()
		}
		closed := make(chan error, 1)
		go func() { r.plane.Close(); closed <- nil }()
		if err := waitFor(closed); err != nil {
			tb.Errorf("Plane.Close: %v", err)
		}
	})
	return r
}

// reloadUDP builds a routing table of protos and makes the UDP engine
// follow it from now on, as after a reload; it is closed when the test
// ends.
func (r *rig) reloadUDP(protos ...*protocols.Protocol) {
	r.tb.Helper()
	plan, err := routing.Build(protos, 0, nil, r.stats, slog.New(slog.NewTextHandler(r.log, nil)))
	if err != nil {
		r.tb.Fatal(err)
	}
	t := plan.Commit(r.ctx)
	r.tb.Cleanup(t.Close)
	r.udpTable.Store(t)
}

// waitFor receives from ch, or fails after bound.
func waitFor(ch <-chan error) error {
	select {
	case err := <-ch:
		return err
	case <-time.After(bound):
		return fmt.Errorf("no answer within %v", bound)
	}
}

// detect recognises a first flight starting with magic.
func detect(magic string) protocols.DetectFunc {
	return func(b []byte) protocols.Result {
		n := min(len(b), len(magic))
		switch {
		case string(b[:n]) != magic[:n]:
			return protocols.NoMatch
		case n < len(magic):
			return protocols.NeedMore
		}
		return protocols.Match
	}
}

// route is a protocol named name whose first flight starts "HELLO",
// forwarded to target.
func route(name, target string) *protocols.Protocol { return routeFor(name, "HELLO", target) }

// routeFor is a protocol named name whose first flight starts with magic,
// forwarded to target.
func routeFor(name, magic, target string) *protocols.Protocol {
	return &protocols.Protocol{Name: name, Target: target, FirstBytes: []byte(magic[:1]), Detect: detect(magic)}
}

// payload is n bytes that hello recognises: "HELLO" and then bytes drawn
// from a fixed seed, so a failure repeats.
func payload(n int) []byte {
	b := make([]byte, n)
	copy(b, "HELLO")
	rng := rand.NewChaCha8([32]byte{1, 2, 3})
	_, _ = rng.Read(b[min(n, 5):])
	return b
}

// dial connects to the rig; the connection's deadline is bound from now
// and it is closed when the test ends.
func (r *rig) dial() *net.TCPConn {
	r.tb.Helper()
	c, err := net.DialTimeout("tcp", r.addr, bound)
	if err != nil {
		r.tb.Fatal(err)
	}
	r.tb.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(bound))
	return c.(*net.TCPConn)
}

// echoed dials the rig, sends "HELLO\n" to a route whose backend echoes
// and reads the echo: a forwarded pair, open.
func (r *rig) echoed() *net.TCPConn {
	r.tb.Helper()
	c := r.dial()
	if _, err := c.Write([]byte("HELLO\n")); err != nil {
		r.tb.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 6)); err != nil {
		r.tb.Fatalf("the echo: %v; log:\n%s", err, r.log)
	}
	return c
}

// turnedAway dials the rig, sends b and checks that the plane closes the
// connection without a byte back; who says who the client is.
func (r *rig) turnedAway(b []byte, who string) {
	r.tb.Helper()
	c := r.dial()
	if _, err := c.Write(b); err != nil {
		r.tb.Fatal(err)
	}
	if got, err := readAll(c); len(got) > 0 || errors.Is(err, os.ErrDeadlineExceeded) {
		r.tb.Errorf("%s: read %q, %v; want it closed", who, got, err)
	}
}

// exchange sends b through the rig, half-closes and returns everything
// read until the far end closed: the write runs beside the read, so an
// echo of more than the sockets hold does not deadlock.
func (r *rig) exchange(b []byte) []byte {
	r.tb.Helper()
	c := r.dial()
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(b)
		if err == nil {
			err = c.CloseWrite()
		}
		wrote <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		r.tb.Errorf("read after %d bytes: %v", len(got), err)
	}
	if err := <-wrote; err != nil {
		r.tb.Errorf("write: %v", err)
	}
	return got
}

// metric is the value of the counter or gauge name whose labels include
// every "key=value" of labels; 0 when there is none.
func (r *rig) metric(name string, labels ...string) float64 {
	r.tb.Helper()
	mfs, err := r.stats.Registry().Gather()
	if err != nil {
		r.tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, want := range labels {
				k, v, _ := strings.Cut(want, "=")
				found := false
				for _, l := range m.GetLabel() {
					found = found || l.GetName() == k && l.GetValue() == v
				}
				if !found {
					continue next
				}
			}
			if m.Gauge != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// closed is protoplex_connections_closed_total of protocol for reason.
func (r *rig) closed(protocol, reason string) float64 {
	return r.metric("protoplex_connections_closed_total", "protocol="+protocol, "reason="+reason)
}

// waitMetric waits until metric(name, labels...) is want.
func (r *rig) waitMetric(want float64, name string, labels ...string) {
	r.tb.Helper()
	testnet.Eventually(r.tb, bound, func() bool { return r.metric(name, labels...) == want },
		"%s%v = %v, want %v; log:\n%s", name, labels, testnet.Later(func() string { return fmt.Sprint(r.metric(name, labels...)) }), want, r.log)
}

// idle waits until the plane holds no connection: none tracked, the
// active gauge back at 0.
func (r *rig) idle() {
	r.tb.Helper()
	testnet.Eventually(r.tb, bound, func() bool {
		return r.conns.Len() == 0 && r.metric("protoplex_connections_active") == 0
	}, "connections still open: %v tracked; log:\n%s", testnet.Later(func() string { return fmt.Sprint(r.conns.Len()) }), r.log)
}

// readAll reads c until EOF or an error, within bound.
func readAll(c net.Conn) ([]byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(bound))
	return io.ReadAll(c)
}

// sameBytes fails tb when got is not want, saying where they differ.
func sameBytes(tb testing.TB, what string, got, want []byte) {
	tb.Helper()
	if bytes.Equal(got, want) {
		return
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	tb.Errorf("%s: got %d bytes, want %d; first difference at %d", what, len(got), len(want), i)
}

// openFDs is the number of file descriptors the process has open.
func openFDs(tb testing.TB) int {
	tb.Helper()
	return len(fdTable(tb))
}

// fdTable lists the process's file descriptors as "fd → what" (a
// socket's inode, a pipe, an epoll instance).
func fdTable(tb testing.TB) []string {
	tb.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		what, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // the directory's own, closed already
		}
		out = append(out, e.Name()+" → "+what)
	}
	return out
}
