package upstream

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/darkit/protoplex/protocols"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// counting is a backend that counts accepted connections.
type counting struct {
	ln    net.Listener
	mu    sync.Mutex
	n     int
	conns []net.Conn
	wg    sync.WaitGroup
}

func newCounting(t *testing.T) *counting {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return countOn(t, ln)
}

// countOn counts the connections accepted on ln until the test ends.
func countOn(t *testing.T, ln net.Listener) *counting {
	c := &counting{ln: ln}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.mu.Lock()
			c.n++
			c.conns = append(c.conns, conn)
			c.mu.Unlock()
		}
	}()
	t.Cleanup(c.close)
	return c
}

func (c *counting) close() {
	c.ln.Close()
	c.wg.Wait()
	c.mu.Lock()
	for _, x := range c.conns {
		x.Close()
	}
	c.conns = nil
	c.mu.Unlock()
}

func (c *counting) count() int { c.mu.Lock(); defer c.mu.Unlock(); return c.n }

func dialN(t *testing.T, s *Set, n int, hold bool) {
	t.Helper()
	for i := 0; i < n; i++ {
		c, _, done, err := s.Dial(context.Background(), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !hold {
			c.Close()
			done()
		}
	}
}

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
			var bs []*counting
			var targets []Target
			for _, w := range tc.weights {
				b := newCounting(t)
				bs = append(bs, b)
				targets = append(targets, Target{Addr: b.ln.Addr().String(), Weight: w})
			}
			s, err := New(targets, Options{Strategy: tc.strategy})
			if err != nil {
				t.Fatal(err)
			}
			const n = 3000
			dialN(t, s, n, false)
			deadline := time.Now().Add(10 * time.Second)
			for sum(bs) < n && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			for i, b := range bs {
				got := float64(b.count()) / n
				if d := got - tc.want[i]; d > 0.05 || d < -0.05 {
					t.Errorf("target %d got %.3f of connections, want %.3f", i, got, tc.want[i])
				}
			}
		})
	}
}

func sum(bs []*counting) int {
	n := 0
	for _, b := range bs {
		n += b.count()
	}
	return n
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
	addrA := a.ln.Addr().String()
	a.close() // A is down
	var failures int
	var mu sync.Mutex
	s, _ := New([]Target{{Addr: addrA, Weight: 1}, {Addr: b.ln.Addr().String(), Weight: 1}}, Options{DialDone: func(_ string, _ time.Duration, err error) {
		if err != nil {
			mu.Lock()
			failures++
			mu.Unlock()
		}
	}})
	dialN(t, s, 20, false)
	for deadline := time.Now().Add(5 * time.Second); b.count() < 20 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond) // the backend's accept loop counts asynchronously
	}
	if failures != 1 || b.count() != 20 {
		t.Fatalf("failures %d, served by B %d", failures, b.count())
	}
	// A comes back on the same port.
	ln, err := net.Listen("tcp", addrA)
	if err != nil {
		t.Skip("port taken meanwhile")
	}
	back := countOn(t, ln)
	deadline := time.Now().Add(10 * time.Second) // back-off is 1 s after one failure
	for back.count() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("target not re-admitted")
		}
		dialN(t, s, 2, false)
		time.Sleep(50 * time.Millisecond)
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

func TestProxyHeaderRoundTrip(t *testing.T) {
	for _, c := range []struct{ client, local string }{{"192.0.2.1:4000", "198.51.100.2:443"}, {"[2001:db8::1]:4000", "[2001:db8::2]:443"}} {
		ca, _ := net.ResolveTCPAddr("tcp", c.client)
		la, _ := net.ResolveTCPAddr("tcp", c.local)
		for _, v := range []string{"v1", "v2"} {
			h := ProxyHeader(v, ca, la)
			for i := 0; i < len(h); i++ { // split-read: prefixes need more
				if _, _, _, r := ParseProxyHeader(h[:i]); r != protocols.NeedMore {
					t.Fatalf("%s prefix %d: %v", v, i, r)
				}
			}
			src, dst, n, r := ParseProxyHeader(append(h, "SSH-2.0-x\r\n"...))
			if r != protocols.Match || n != len(h) || src.String() != netip.MustParseAddrPort(c.client).String() || dst.String() != netip.MustParseAddrPort(c.local).String() {
				t.Fatalf("%s: %v %v %d %v", v, src, dst, n, r)
			}
		}
	}
	if _, _, _, r := ParseProxyHeader([]byte("GET / HTTP/1.1\r\n")); r != protocols.NoMatch {
		t.Fatal("HTTP taken for PROXY")
	}
	if src, _, n, r := ParseProxyHeader([]byte("PROXY UNKNOWN\r\n")); r != protocols.Match || n != 15 || src.IsValid() {
		t.Fatal("UNKNOWN")
	}
}

func FuzzParseProxyHeader(f *testing.F) {
	ca, _ := net.ResolveTCPAddr("tcp", "192.0.2.1:4000")
	la, _ := net.ResolveTCPAddr("tcp", "[2001:db8::2]:443")
	f.Add(ProxyHeader("v1", ca, ca))
	f.Add(ProxyHeader("v2", ca, ca))
	f.Add(ProxyHeader("v2", la, la))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _, n, r := ParseProxyHeader(data)
		if r == protocols.Match && (n <= 0 || n > len(data)) {
			t.Fatalf("n=%d for %d bytes", n, len(data))
		}
		// Decided on a prefix ⇒ same decision on the whole.
		for k := 0; k < len(data); k += 7 {
			if _, _, m, rk := ParseProxyHeader(data[:k]); rk != protocols.NeedMore {
				if rk != r || (rk == protocols.Match && m != n) {
					t.Fatalf("prefix %d says %v/%d, whole says %v/%d", k, rk, m, r, n)
				}
				break
			}
		}
	})
}

func BenchmarkDial(b *testing.B) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	s, _ := New([]Target{{Addr: ln.Addr().String(), Weight: 1}}, Options{})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		c, _, done, err := s.Dial(context.Background(), nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
		done()
	}
}

// TestActiveHealthChecks: a target failing its checks is taken out after
// Fall failures and re-admitted after Rise successes.
func TestActiveHealthChecks(t *testing.T) {
	good := newCounting(t)
	const badAddr = "127.0.0.1:1" // refused; a freed ephemeral port could be taken again
	var mu sync.Mutex
	states := map[string]bool{}
	s, _ := New([]Target{{Addr: badAddr, Weight: 1}, {Addr: good.ln.Addr().String(), Weight: 1}}, Options{
		Health: HealthCheck{Interval: 20 * time.Millisecond, Timeout: 2 * time.Second, Fall: 2, Rise: 2},
		StateChange: func(addr string, up bool) {
			mu.Lock()
			states[addr] = up
			mu.Unlock()
		},
	})
	s.Start(context.Background())
	defer s.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := s.Status()
		if !st[0].Up && st[1].Up {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	if up, ok := states[badAddr]; !ok || up {
		t.Fatalf("no down transition reported: %v", states)
	}
	mu.Unlock()
	if s.HealthChecks() == 0 {
		t.Fatal("no checks counted")
	}
}

// TestHealthCheckHTTP uses a real HTTP answer.
func TestHealthCheckHTTP(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n"))
			c.Close()
		}
	}()
	s, _ := New([]Target{{Addr: ln.Addr().String(), Weight: 1}}, Options{Health: HealthCheck{Interval: time.Second, Check: "http"}})
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
	deadline := time.Now().Add(10 * time.Second)
	for s.Idle() < 3 || b.count() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("pool not filled: idle %d, backend saw %d", s.Idle(), b.count())
		}
		time.Sleep(5 * time.Millisecond)
	}
	c, _, done, err := s.Dial(context.Background(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	done()
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
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c // held open until the listener goes
		}
	}()
	s, _ := New([]Target{{Addr: ln.Addr().String(), Weight: 1}}, Options{Pool: Pool{MinIdle: 64}})
	s.Start(context.Background())
	defer s.Close()
	for s.Idle() < 64 {
		time.Sleep(time.Millisecond)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c, _, done, err := s.Dial(context.Background(), nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
		done()
		if i%32 == 31 {
			b.StopTimer()
			for s.Idle() < 32 {
				time.Sleep(time.Millisecond)
			}
			b.StartTimer()
		}
	}
}
