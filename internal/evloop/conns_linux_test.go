//go:build linux

package evloop_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/evloop"
	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/protocols"
)

// TestConnections: each loop lists the connections it owns, in every state
// a drain may find, read on the loop through call; a snapshot holds no
// more than its limit, and the plane a manager shares has the same list.
func TestConnections(t *testing.T) {
	r, clients := holdEveryState(t)
	echo, stuck := clients["forwarded"].target, clients["connecting"].target
	want := map[string]evloop.ConnInfo{
		"forwarded":   {State: "forwarding", Route: "ECHO", Target: echo, Backend: echo, Up: 6, Down: 6},
		"identifying": {State: "identifying"},
		"connecting":  {State: "connecting", Route: "STUCK", Target: stuck, Backend: stuck},
		"dialing":     {State: "dialing", Route: "OFFLOOP", Target: stuck},
	}
	got := r.plane.Connections(100)
	if len(got) != len(want) {
		t.Fatalf("Connections lists %d, want %d: %+v", len(got), len(want), got)
	}
	ids := map[uint64]bool{}
	for name, w := range want {
		client := clients[name].conn.LocalAddr().String()
		var ci *evloop.ConnInfo
		for i := range got {
			if got[i].Client == client {
				ci = &got[i]
			}
		}
		if ci == nil {
			t.Errorf("%s (client %s) is not listed: %+v", name, client, got)
			continue
		}
		ids[ci.ID] = true
		if ci.State != w.State || ci.Route != w.Route || ci.Target != w.Target || ci.Up != w.Up || ci.Down != w.Down {
			t.Errorf("%s: %+v, want state %q, route %q, target %q, %d up and %d down", name, *ci, w.State, w.Route, w.Target, w.Up, w.Down)
		}
		if w.Backend != "" && ci.Backend != w.Backend {
			t.Errorf("%s: backend %q, want %q", name, ci.Backend, w.Backend)
		}
		if ci.Age < 0 || ci.Age > time.Hour {
			t.Errorf("%s: age %v", name, ci.Age)
		}
	}
	if len(ids) != len(want) {
		t.Errorf("IDs repeat: %+v", got)
	}
	if n := len(r.plane.Connections(2)); n != 2 {
		t.Errorf("Connections(2) lists %d", n)
	}
	if n := len(r.plane.Connections(0)); n != 0 {
		t.Errorf("Connections(0) lists %d", n)
	}
	r.conns.CloseAll()
	r.idle()
	if got := r.plane.Connections(100); len(got) != 0 {
		t.Errorf("after the drain Connections lists %+v", got)
	}
}

// held is a client the test keeps open in some state, and the target its
// route dials.
type held struct {
	conn   net.Conn
	target string
}

// TestSharedConnections: the manager's Shared plane lists the connections
// of the loops while they run, and none once they stopped.
func TestSharedConnections(t *testing.T) {
	s := &evloop.Shared{}
	p := s.Acquire(1)
	if p == nil {
		t.Fatal("no plane")
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	ln := testnet.Listen(t)
	go func() { served <- p.Serve(ctx, ln) }()
	if got := s.Connections(10); len(got) != 0 {
		t.Errorf("an idle plane lists %+v", got)
	}
	cancel()
	if err := waitFor(served); err != nil {
		t.Fatal(err)
	}
	s.Release(true)
	if got := s.Connections(10); got != nil {
		t.Errorf("a stopped plane lists %+v", got)
	}
}

// TestServeClosedPlane: a closed plane refuses a listener at once instead
// of waiting forever for loops that have stopped.
func TestServeClosedPlane(t *testing.T) {
	p, err := evloop.New(evloop.Env{}, 2)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	served := make(chan error, 1)
	go func() { served <- p.Serve(context.Background(), testnet.Listen(t)) }()
	if err := waitFor(served); !errors.Is(err, evloop.ErrClosed) {
		t.Errorf("Serve on a closed plane: %v, want ErrClosed", err)
	}
	if got := p.Connections(10); len(got) != 0 {
		t.Errorf("a closed plane lists %+v", got)
	}
}

// clock is a clock the test moves; the loops read it through Env.Now.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// TestIdleTimeoutOnLoopClock: the idle timeout is read from the loops'
// clock (Env.Now): a pair idle for an hour of that clock closes as
// idle_timeout, with no wall-clock wait, and an age follows the clock.
func TestIdleTimeoutOnLoopClock(t *testing.T) {
	clk := newClock()
	p := route("IDLE", testnet.Echo(t))
	p.IdleTimeout = time.Hour
	r := newRig(t, []*protocols.Protocol{p}, func(s *setup) { s.env.Now = clk.Now })
	c := r.echoed()
	clk.Advance(time.Hour - time.Second)
	if got := r.plane.Connections(10); len(got) != 1 || got[0].Age < time.Hour-time.Second {
		t.Fatalf("after %v of the loops' clock: %+v", time.Hour-time.Second, got)
	}
	if n := r.closed("IDLE", "idle_timeout"); n != 0 {
		t.Fatalf("closed as idle before the hour: %v", n)
	}
	clk.Advance(time.Second)
	testnet.Eventually(t, bound, func() bool {
		r.plane.Connections(1) // wakes every loop: each fires what its clock says is due
		return r.closed("IDLE", "idle_timeout") == 1
	}, "not closed as idle_timeout an hour later on the loops' clock; log:\n%s", r.log)
	if _, err := readAll(c); err != nil {
		t.Errorf("client: %v", err)
	}
	r.idle()
}

// BenchmarkConnections: a snapshot of 1,000 forwarded pairs over 2 loops
// (each loop pauses while it copies its own).
func BenchmarkConnections(b *testing.B) {
	r := newRig(b, []*protocols.Protocol{route("ECHO", testnet.Echo(b))}, func(s *setup) { s.srv.AccessLog = false; s.level = slog.LevelWarn })
	const n = 1000
	for range n {
		r.echoed()
	}
	testnet.Eventually(b, bound, func() bool { return len(r.plane.Connections(2*n)) == n }, "not %d connections listed", n)
	b.ReportAllocs()
	for b.Loop() {
		if got := len(r.plane.Connections(2 * n)); got != n {
			b.Fatalf("listed %d", got)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/conn")
}
