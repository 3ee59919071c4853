package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/darkit/protoplex/internal/proxyproto"
	"github.com/darkit/protoplex/internal/testnet"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// counting is a backend that counts the connections it accepts and holds
// each open until the client closes it or the test ends.
type counting struct {
	ln    net.Listener
	mu    sync.Mutex
	n     int
	conns []net.Conn
}

func newCounting(tb testing.TB) *counting {
	tb.Helper()
	return countOn(tb, testnet.Listen(tb))
}

// countOn counts the connections accepted on ln until the test ends.
func countOn(tb testing.TB, ln net.Listener) *counting {
	tb.Helper()
	c := &counting{ln: ln}
	testnet.ServeOn(tb, ln, func(conn net.Conn) {
		c.mu.Lock()
		c.n++
		c.conns = append(c.conns, conn)
		c.mu.Unlock()
		io.Copy(io.Discard, conn)
	})
	return c
}

func (c *counting) count() int { c.mu.Lock(); defer c.mu.Unlock(); return c.n }

// dialN dials n times, closing each connection, and counts the targets
// that served.
func dialN(t *testing.T, s *Set, n int) map[string]int {
	t.Helper()
	served := map[string]int{}
	for i := 0; i < n; i++ {
		served[dialClose(t, s)]++
	}
	return served
}

// dialClose dials s once, closes the connection and returns the target
// that served it.
func dialClose(tb testing.TB, s *Set) string {
	tb.Helper()
	c, addr, done, err := s.Dial(context.Background(), nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	c.Close()
	done()
	return addr
}

// fakeClock is a Set's clock that moves only when the test says.
type fakeClock struct{ ns atomic.Int64 }

// newFakeClock makes s run on a fake clock; call it before s is used.
func newFakeClock(s *Set) *fakeClock {
	f := &fakeClock{}
	f.ns.Store(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	s.now = func() time.Time { return time.Unix(0, f.ns.Load()) }
	return f
}

func (f *fakeClock) advance(d time.Duration) { f.ns.Add(int64(d)) }

func TestStrategiesDistribute(t *testing.T) {
	for _, tc := range []struct {
		strategy string
		weights  []int
		want     []float64 // expected shares
	}{
		{RoundRobin, []int{1, 1, 1}, []float64{1. / 3, 1. / 3, 1. / 3}},
		{WeightedRoundRobin, []int{1, 2, 3}, []float64{1. / 6, 2. / 6, 3. / 6}},
		{Random, []int{1, 1, 1}, []float64{1. / 3, 1. / 3, 1. / 3}},
		{First, []int{1, 1, 1}, []float64{1, 0, 0}},
	} {
		t.Run(tc.strategy, func(t *testing.T) {
			var targets []Target
			for _, w := range tc.weights {
				targets = append(targets, Target{Addr: newCounting(t).ln.Addr().String(), Weight: w})
			}
			s, err := New(targets, Options{Strategy: tc.strategy})
			if err != nil {
				t.Fatal(err)
			}
			const n = 3000
			served := dialN(t, s, n)
			for i, tg := range targets {
				got := float64(served[tg.Addr]) / n
				if d := got - tc.want[i]; d > 0.05 || d < -0.05 {
					t.Errorf("target %d got %.3f of connections, want %.3f", i, got, tc.want[i])
				}
			}
		})
	}
}

func TestLeastConnections(t *testing.T) {
	a, b := newCounting(t), newCounting(t)
	s, _ := New([]Target{{Addr: a.ln.Addr().String(), Weight: 1}, {Addr: b.ln.Addr().String(), Weight: 1}}, Options{Strategy: LeastConnections})
	// Hold 10 connections: they spread 5/5; release those on one target and
	// the next dials all go there.
	var held []func()
	var addrs []string
	for i := 0; i < 10; i++ {
		c, addr, done, err := s.Dial(context.Background(), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, done)
		addrs = append(addrs, addr)
	}
	for i, addr := range addrs {
		if addr == a.ln.Addr().String() {
			held[i]()
		}
	}
	for i := 0; i < 4; i++ {
		c, addr, done, _ := s.Dial(context.Background(), nil, nil)
		c.Close()
		if addr != a.ln.Addr().String() {
			t.Fatalf("dial %d went to the busier target", i)
		}
		_ = done // keep it counted as active
	}
}

// TestFailoverAndReadmission: a dead target costs one failed dial, never a
// client error, and is used again once it is back and its back-off passed.
func TestFailoverAndReadmission(t *testing.T) {
	a, b := newCounting(t), newCounting(t)
	addrA, addrB := a.ln.Addr().String(), b.ln.Addr().String()
	a.ln.Close() // A is down
	var failures atomic.Int32
	s, _ := New([]Target{{Addr: addrA, Weight: 1}, {Addr: addrB, Weight: 1}}, Options{DialDone: func(_ string, _ time.Duration, err error) {
		if err != nil {
			failures.Add(1)
		}
	}})
	clock := newFakeClock(s)
	if served := dialN(t, s, 20); failures.Load() != 1 || served[addrB] != 20 {
		t.Fatalf("failures %d, served %v", failures.Load(), served)
	}
	// A comes back on the same port: it is not tried before its back-off
	// (1 s after one failure) has passed, then it takes its share again.
	ln, err := net.Listen("tcp", addrA)
	if err != nil {
		t.Skip("port taken meanwhile")
	}
	countOn(t, ln)
	clock.advance(time.Second - time.Nanosecond)
	if served := dialN(t, s, 4); served[addrB] != 4 {
		t.Fatalf("in back-off: served %v", served)
	}
	clock.advance(time.Nanosecond)
	if served := dialN(t, s, 4); served[addrA] != 2 || served[addrB] != 2 || failures.Load() != 1 {
		t.Fatalf("after back-off: served %v, failures %d", served, failures.Load())
	}
}

// TestBackoffDoubles: each failed dial in a row doubles the time a target
// is skipped, from 1 s up to 32 s; while skipped it costs no attempt.
func TestBackoffDoubles(t *testing.T) {
	live := newCounting(t).ln.Addr().String()
	var attempts atomic.Int32
	s, _ := New([]Target{{Addr: refused, Weight: 1}, {Addr: live, Weight: 1}}, Options{
		Strategy: First,
		DialDone: func(target string, _ time.Duration, _ error) {
			if target == refused {
				attempts.Add(1)
			}
		},
	})
	clock := newFakeClock(s)
	for f, secs := range []time.Duration{1, 2, 4, 8, 16, 32, 32, 32} {
		if served := dialN(t, s, 1); served[live] != 1 || attempts.Load() != int32(f+1) {
			t.Fatalf("failure %d: served %v, %d attempts on the dead target", f+1, served, attempts.Load())
		}
		clock.advance(secs*time.Second - time.Nanosecond)
		dialN(t, s, 1)
		if s.Status()[0].Up || attempts.Load() != int32(f+1) {
			t.Fatalf("failure %d: dead target tried or up before %v", f+1, secs*time.Second)
		}
		clock.advance(time.Nanosecond)
		if !s.Status()[0].Up {
			t.Fatalf("failure %d: dead target still skipped after %v", f+1, secs*time.Second)
		}
	}
}

func TestParseTargets(t *testing.T) {
	ts, err := ParseTargets([]string{"a:1, b:2;w=3", "c:3"})
	if err != nil || len(ts) != 3 || ts[1] != (Target{"b:2", 3}) || ts[0].Weight != 1 {
		t.Fatalf("%v %+v", err, ts)
	}
	for _, bad := range []string{"a", "a:0", "a:70000", "a:1;w=0", "a:1;x=2", ":80", ""} {
		if _, err := ParseTargets([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestDialSendsProxyHeader: with SendProxy, a backend reads the client and
// local addresses first; without them it reads a v1 UNKNOWN or v2 LOCAL.
func TestDialSendsProxyHeader(t *testing.T) {
	ln := testnet.Listen(t)
	client := &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 4000} // a 16-byte IPv4: written as IPv4
	local, _ := net.ResolveTCPAddr("tcp", "198.51.100.2:443")
	want := proxyproto.Header{Source: netip.MustParseAddrPort("192.0.2.1:4000"), Dest: netip.MustParseAddrPort("198.51.100.2:443")}
	for _, v := range []string{"v1", "v2"} {
		s, err := New([]Target{{Addr: ln.Addr().String(), Weight: 1}}, Options{SendProxy: v})
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			client, local net.Addr
			want          proxyproto.Header
		}{{client, local, want}, {nil, nil, proxyproto.Header{Local: true}}} {
			c, _, done, err := s.Dial(context.Background(), tc.client, tc.local)
			if err != nil {
				t.Fatal(err)
			}
			c.Write([]byte("SSH-2.0-x\r\n"))
			sc, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 512)
			h, rest, err := proxyproto.Read(sc, buf, 10*time.Second)
			c.Close()
			done()
			if err != nil || h != tc.want {
				t.Fatalf("%s from %v: %+v %v, want %+v", v, tc.client, h, err, tc.want)
			}
			if tail, _ := io.ReadAll(sc); string(buf[:rest])+string(tail) != "SSH-2.0-x\r\n" {
				t.Fatalf("%s: stream after the header %q", v, string(buf[:rest])+string(tail))
			}
			sc.Close()
		}
	}
}

func BenchmarkDial(b *testing.B) {
	addr := testnet.Serve(b, func(net.Conn) {})
	s, _ := New([]Target{{Addr: addr, Weight: 1}}, Options{})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		dialClose(b, s)
	}
}

// TestActiveHealthChecks: a target failing its checks is taken out after
// Fall failures and re-admitted after Rise successes.
func TestActiveHealthChecks(t *testing.T) {
	good := newCounting(t)
	const badAddr = "127.0.0.1:1" // refused; a freed ephemeral port could be taken again
	var mu sync.Mutex
	states := map[string]bool{}
	badDown := make(chan struct{})
	s, _ := New([]Target{{Addr: badAddr, Weight: 1}, {Addr: good.ln.Addr().String(), Weight: 1}}, Options{
		Health: HealthCheck{Interval: 20 * time.Millisecond, Timeout: 2 * time.Second, Fall: 2, Rise: 2},
		StateChange: func(addr string, up bool) {
			mu.Lock()
			defer mu.Unlock()
			if _, seen := states[addr]; !seen && addr == badAddr && !up {
				close(badDown)
			}
			states[addr] = up
		},
	})
	s.Start(context.Background())
	defer s.Close()
	select {
	case <-badDown:
	case <-time.After(10 * time.Second):
		t.Fatal("failing target not marked down")
	}
	if st := s.Status(); st[0].Up || !st[1].Up {
		t.Fatalf("status %+v", st)
	}
	mu.Lock()
	if up, ok := states[good.ln.Addr().String()]; ok {
		t.Fatalf("the good target changed state (up %v)", up)
	}
	mu.Unlock()
	if s.HealthChecks() == 0 {
		t.Fatal("no checks counted")
	}
}

// TestHealthCheckHTTP uses a real HTTP answer.
func TestHealthCheckHTTP(t *testing.T) {
	addr := testnet.Serve(t, func(c net.Conn) {
		io.WriteString(c, "HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n")
	})
	s, _ := New([]Target{{Addr: addr, Weight: 1}}, Options{Health: HealthCheck{Interval: time.Second, Check: "http"}})
	if err := s.probe(context.Background(), s.targets[0], time.Second); err == nil {
		t.Fatal("503 taken for healthy")
	}
}

// TestWarmPool: pre-dialed connections are handed to one client each and
// counted as reused; stale ones (server closed) are dropped.
func TestWarmPool(t *testing.T) {
	b := newCounting(t)
	s, _ := New([]Target{{Addr: b.ln.Addr().String(), Weight: 1}}, Options{Pool: Pool{MinIdle: 3, MaxIdleTime: time.Minute}})
	s.Start(context.Background())
	defer s.Close()
	testnet.Eventually(t, 10*time.Second, func() bool { return s.Idle() >= 3 && b.count() >= 3 },
		"pool not filled: %s", testnet.Later(func() string { return fmt.Sprintf("idle %d, backend saw %d", s.Idle(), b.count()) }))
	dialClose(t, s)
	if s.Reused() != 1 || s.Created() < 3 {
		t.Fatalf("reused %d created %d", s.Reused(), s.Created())
	}
	// The backend closes its side of every pooled conn: they must not be
	// handed out.
	b.mu.Lock()
	for _, x := range b.conns {
		x.Close()
	}
	b.mu.Unlock()
	for i := 0; i < 5; i++ {
		c, _, done, err := s.Dial(context.Background(), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, err := c.Read(make([]byte, 1)); n == 0 && err != nil && !isTimeout(err) {
			t.Fatalf("dial %d got a dead pooled conn: %v", i, err)
		}
		c.Close()
		done()
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func BenchmarkDialWarm(b *testing.B) {
	s, _ := New([]Target{{Addr: newCounting(b).ln.Addr().String(), Weight: 1}}, Options{Pool: Pool{MinIdle: 64}})
	s.Start(context.Background())
	defer s.Close()
	for s.Idle() < 64 {
		time.Sleep(time.Millisecond)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dialClose(b, s)
		if i%32 == 31 {
			b.StopTimer()
			for s.Idle() < 32 {
				time.Sleep(time.Millisecond)
			}
			b.StartTimer()
		}
	}
}

// TestHealthCheckDNS: check: dns is a query over UDP and an answer with
// its ID, whatever the code; a server that never answers fails; and the
// passive reports of a UDP flow move a target in and out of back-off.
func TestHealthCheckDNS(t *testing.T) {
	answering, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	silent, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 512)
		for {
			n, from, err := answering.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if n >= 12 {
				a := append([]byte(nil), buf[:n]...)
				a[2], a[3] = 0x80, 0x05 // an answer: REFUSED
				answering.WriteToUDPAddrPort(a, from)
			}
		}
	}()
	t.Cleanup(func() { answering.Close(); silent.Close(); <-done })
	s, err := New([]Target{{Addr: answering.LocalAddr().String(), Weight: 1}, {Addr: silent.LocalAddr().String(), Weight: 1}},
		Options{Health: HealthCheck{Interval: time.Second, Check: "dns"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.probe(context.Background(), s.targets[0], 5*time.Second); err != nil {
		t.Fatalf("an answering server: %v", err)
	}
	if err := s.probe(context.Background(), s.targets[1], 200*time.Millisecond); err == nil {
		t.Fatal("a silent server passed")
	}

	// Passive: a silent flow puts its target into back-off; a reply ends it.
	var seen []error
	s.opt.DialDone = func(_ string, _ time.Duration, err error) { seen = append(seen, err) }
	clock := newFakeClock(s)
	p := s.DatagramPlan()
	a, _ := p.Next()
	p.Done(a, 0, nil)
	s.DatagramSilent(a, 3*time.Second)
	if s.Status()[0].Up || len(seen) != 2 || seen[0] != nil || !errors.Is(seen[1], ErrNoReply) {
		t.Fatalf("after a silent flow: %+v, DialDone saw %v", s.Status(), seen)
	}
	// A flow's successful connect does not undo it: only a reply does.
	p = s.DatagramPlan()
	b, _ := p.Next()
	p.Done(b, 0, nil)
	if b.Target == a.Target || s.Status()[0].Up {
		t.Fatalf("the next flow went to %s; status %+v", b.Target, s.Status())
	}
	clock.advance(time.Second)
	s.DatagramReplied(a)
	if !s.Status()[0].Up {
		t.Fatal("a reply did not bring the target back")
	}
}

// TestNoTargets: a set may have no target (a protocol whose targets come
// from etcd discovery only, before one registers): every strategy's plan is
// empty and a dial fails with ErrNoTarget.
func TestNoTargets(t *testing.T) {
	for _, strategy := range []string{RoundRobin, WeightedRoundRobin, LeastConnections, Random, First} {
		s, err := New(nil, Options{Strategy: strategy})
		if err != nil {
			t.Fatalf("%s: %v", strategy, err)
		}
		p := s.Plan()
		if _, ok := p.Next(); ok {
			t.Fatalf("%s: a plan over no target has an attempt", strategy)
		}
		if _, _, _, err := s.Dial(context.Background(), nil, nil); err != ErrNoTarget {
			t.Fatalf("%s: dial %v, want ErrNoTarget", strategy, err)
		}
		s.Close()

	}
}
