package udp

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/darkit/protoplex/internal/metrics"
	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/internal/udp/udptest"
	"github.com/darkit/protoplex/internal/upstream"
	"github.com/darkit/protoplex/protocols"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// prefix answers Match for datagrams starting with p, else NoMatch.
func prefix(p string) protocols.DatagramFunc {
	return func(d [][]byte) protocols.Result {
		if bytes.HasPrefix(d[0], []byte(p)) {
			return protocols.Match
		}
		return protocols.NoMatch
	}
}

// twoStep matches a flow whose first datagram is "A" once it sent a
// second one starting with "B".
func twoStep(d [][]byte) protocols.Result {
	if string(d[0]) != "A" {
		return protocols.NoMatch
	}
	if len(d) < 2 {
		return protocols.NeedMore
	}
	if bytes.HasPrefix(d[1], []byte("B")) {
		return protocols.Match
	}
	return protocols.NoMatch
}

// clock is a settable time for the engine.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }

type fixture struct {
	log   *testnet.Buffer // the engine's log
	e     *Engine
	addr  *net.UDPAddr
	ln    *listener
	stats *metrics.UDP
	clock *clock
}

// start serves routes on a loopback UDP listener with settings s; the
// janitor never runs on its own (the test calls Sweep).
func start(t *testing.T, routes []Route, s Settings, prepare ...func(*Table)) *fixture {
	t.Helper()
	st := metrics.New().UDP
	table := NewTable(routes, st)
	for _, p := range prepare {
		p(table)
	}
	f := &fixture{stats: st, clock: &clock{}, log: &testnet.Buffer{}}
	f.clock.add(time.Duration(1e9) * time.Second)
	// One socket: the test's clients all reach f.ln, whose table it reads.
	f.e = New(Options{Table: func() *Table { return table }, Settings: func() Settings { return s }, Stats: st, Now: f.clock.now, Sweep: time.Hour,
		Log: slog.New(slog.NewTextHandler(f.log, nil)), Sockets: 1})
	t.Cleanup(f.e.Close)
	a, err := f.e.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = a.(*net.UDPAddr)
	f.ln = f.e.lns[0]
	return f
}

// datagram hands b from client to ln's owner, as if it read it, and
// waits until it is handled.
func (e *Engine) datagram(ln *listener, client netip.AddrPort, b []byte) {
	ln.call(func() { ln.datagram(client, b, e.now()) })
}

func dial(t *testing.T, to *net.UDPAddr) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, to)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func roundTrip(t *testing.T, c *net.UDPConn, msg string) string {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	return read(t, c)
}

func read(t *testing.T, c *net.UDPConn) string {
	t.Helper()
	buf := make([]byte, 2048)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

func TestRoutesByPrefixAndRepliesToTheFlow(t *testing.T) {
	a, b := udptest.Echo(t, true), udptest.Echo(t, false)
	f := start(t, []Route{{Name: "A", Detect: prefix("a"), Targets: []string{a}}, {Name: "B", Detect: prefix("b"), Targets: []string{b}}}, Settings{})
	ca, cb := dial(t, f.addr), dial(t, f.addr)
	if got := roundTrip(t, ca, "a1"); got != "a1|a1" {
		t.Fatalf("a: got %q", got)
	}
	if got := roundTrip(t, cb, "b1"); got != "b1" {
		t.Fatalf("b: got %q", got)
	}
	// Later datagrams follow the flow, whatever they start with.
	if got := roundTrip(t, ca, "zz"); got != "a1|zz" {
		t.Fatalf("a, second datagram: got %q", got)
	}
	if n := f.e.Flows(); n != 2 {
		t.Fatalf("flows = %d, want 2", n)
	}
	// Counted after the write to the backend, which may come after the
	// answer arrives.
	testnet.Eventually(t, 5*time.Second, func() bool { return value(t, f.stats.Route("A").DatagramsUp) == 2 }, "A datagrams up = 2")
}

func TestNeedMoreWaitsForTheNextDatagram(t *testing.T) {
	echo := udptest.Echo(t, true)
	f := start(t, []Route{{Name: "two", Detect: twoStep, Targets: []string{echo}}}, Settings{})
	c := dial(t, f.addr)
	if _, err := c.Write([]byte("A")); err != nil {
		t.Fatal(err)
	}
	// Both datagrams reach the backend in order once the second decides.
	if _, err := c.Write([]byte("B")); err != nil {
		t.Fatal(err)
	}
	got := []string{read(t, c), read(t, c)}
	if got[0] != "A|A" || got[1] != "A|B" {
		t.Fatalf("got %q, want A|A then A|B", got)
	}
}

func TestUndecidedFlowTakesTheFallbackAfterMaxWait(t *testing.T) {
	echo, fb := udptest.Echo(t, false), udptest.Echo(t, true)
	f := start(t, []Route{{Name: "two", Detect: twoStep, Targets: []string{echo}}, {Name: "fb", Detect: prefix("\x00never"), Fallback: true, Targets: []string{fb}}}, Settings{})
	c := dial(t, f.addr)
	if _, err := c.Write([]byte("A")); err != nil {
		t.Fatal(err)
	}
	waitFlows(t, f.e, 1)
	f.clock.add(MaxWait)
	f.e.Sweep(f.clock.now())
	if got := read(t, c); got != "A|A" {
		t.Fatalf("got %q from the fallback, want A|A", got)
	}
}

func TestUnmatchedDatagramsLeaveNoState(t *testing.T) {
	f := start(t, []Route{{Name: "A", Detect: prefix("a"), Targets: []string{udptest.Echo(t, false)}}}, Settings{})
	for i := range 1000 {
		f.e.datagram(f.ln, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, byte(i >> 8), byte(i)}), 1000), []byte("x"))
	}
	if n := f.e.Flows(); n != 0 {
		t.Fatalf("flows = %d after unmatched datagrams, want 0", n)
	}
	if got := value(t, f.stats.Refused(metrics.UDPNoMatch)); got != 1000 {
		t.Fatalf("refused no_match = %v, want 1000", got)
	}
}

func TestIdleFlowsExpire(t *testing.T) {
	echo := udptest.Echo(t, false)
	f := start(t, []Route{{Name: "dns", Detect: prefix("q"), Targets: []string{echo}, IdleTimeout: 10 * time.Second},
		{Name: "vpn", Detect: prefix("v"), Targets: []string{echo}, IdleTimeout: 2 * time.Minute}}, Settings{})
	q, v := dial(t, f.addr), dial(t, f.addr)
	roundTrip(t, q, "q")
	roundTrip(t, v, "v")
	f.clock.add(9 * time.Second)
	f.e.Sweep(f.clock.now())
	if n := f.e.Flows(); n != 2 {
		t.Fatalf("flows = %d before any timeout, want 2", n)
	}
	roundTrip(t, v, "v2") // activity postpones v's expiry
	f.clock.add(2 * time.Second)
	f.e.Sweep(f.clock.now())
	if n := f.e.Flows(); n != 1 {
		t.Fatalf("flows = %d after the DNS timeout, want 1", n)
	}
	f.clock.add(2*time.Minute - 3*time.Second)
	f.e.Sweep(f.clock.now())
	if n := f.e.Flows(); n != 1 {
		t.Fatalf("flows = %d: the active flow expired early", n)
	}
	f.clock.add(3 * time.Second)
	f.e.Sweep(f.clock.now())
	if n := f.e.Flows(); n != 0 {
		t.Fatalf("flows = %d after every timeout, want 0", n)
	}
	if got := value(t, f.stats.Idle); got != 2 {
		t.Fatalf("expired idle = %v, want 2", got)
	}
	if got := value(t, f.stats.Active); got != 0 {
		t.Fatalf("active gauge = %v, want 0", got)
	}
}

func TestFullTableEvictsTheFlowIdleLongest(t *testing.T) {
	f := start(t, []Route{{Name: "A", Detect: prefix("a"), Targets: []string{udptest.Echo(t, true)}}}, Settings{MaxFlows: 3})
	c := []*net.UDPConn{dial(t, f.addr), dial(t, f.addr), dial(t, f.addr), dial(t, f.addr)}
	for i := range 3 {
		roundTrip(t, c[i], "a")
		f.clock.add(time.Second)
	}
	roundTrip(t, c[0], "a") // c[1] is now the one idle longest
	f.clock.add(time.Second)
	roundTrip(t, c[3], "a")
	if n := f.e.Flows(); n != 3 {
		t.Fatalf("flows = %d, want 3", n)
	}
	if got := value(t, f.stats.Evicted); got != 1 {
		t.Fatalf("evicted = %v, want 1", got)
	}
	var kept bool
	f.ln.call(func() { kept = f.ln.t.lookup(addrOf(c[1])) != nil })
	if kept {
		t.Fatal("the flow idle longest was kept")
	}
}

func addrOf(c *net.UDPConn) netip.AddrPort {
	a := c.LocalAddr().(*net.UDPAddr).AddrPort()
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

func TestPerSourceCap(t *testing.T) {
	f := start(t, []Route{{Name: "A", Detect: prefix("a"), Targets: []string{udptest.Echo(t, false)}}}, Settings{MaxFlowsPerSource: 2})
	for port := range uint16(5) {
		f.e.datagram(f.ln, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.9"), 2000+port), []byte("a"))
	}
	// An IPv6 /64 is one source.
	for i := range 3 {
		f.e.datagram(f.ln, netip.AddrPortFrom(netip.MustParseAddr("2001:db8::"+string(rune('1'+i))), 53), []byte("a"))
	}
	if n := f.e.Flows(); n != 4 {
		t.Fatalf("flows = %d, want 2 per source", n)
	}
	if got := value(t, f.stats.Refused(metrics.UDPPerSource)); got != 4 {
		t.Fatalf("refused per_source_limit = %v, want 4", got)
	}
	if n := strings.Count(f.log.String(), "max_udp_flows_per_source reached"); n != 4 {
		t.Fatalf("%d refusal lines, want 4:\n%s", n, f.log)
	}
}

// Without max_udp_flows_per_source (the default) one address may hold as
// many flows as the table: a resolver's random source ports, or a NAT
// gateway, lose nothing.
func TestNoPerSourceCapByDefault(t *testing.T) {
	f := start(t, []Route{{Name: "A", Detect: prefix("a"), Targets: []string{udptest.Echo(t, false)}}}, Settings{})
	const ports = 500
	for port := range uint16(ports) {
		f.e.datagram(f.ln, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.9"), 2000+port), []byte("a"))
	}
	if n := f.e.Flows(); n != ports {
		t.Fatalf("flows = %d from one source, want %d", n, ports)
	}
	if got := value(t, f.stats.Refused(metrics.UDPPerSource)); got != 0 {
		t.Fatalf("refused per_source_limit = %v, want 0", got)
	}
}

// A flood of matching datagrams from spoofed sources holds at most
// MaxFlows flows, and as many sockets.
func TestSpoofedFloodIsBounded(t *testing.T) {
	const maxFlows = 200
	f := start(t, []Route{{Name: "A", Detect: prefix("a"), Targets: []string{udptest.Echo(t, false)}}}, Settings{MaxFlows: maxFlows})
	fds := openFDs(t)
	for i := range 20000 {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, byte(i >> 8), byte(i)}), uint16(1024+i%60000))
		f.e.datagram(f.ln, src, []byte("a"))
		if i%1000 == 0 {
			f.clock.add(time.Millisecond)
		}
	}
	if n := f.e.Flows(); n != maxFlows {
		t.Fatalf("flows = %d, want %d", n, maxFlows)
	}
	if got := value(t, f.stats.Evicted); got != 20000-maxFlows {
		t.Fatalf("evicted = %v, want %d", got, 20000-maxFlows)
	}
	// Logged, but at most refusalLogRate lines a second: the clock moved
	// 20 ms, so one second's budget.
	if n := strings.Count(f.log.String(), "udp flow evicted"); n != refusalLogRate {
		t.Fatalf("%d eviction lines, want %d (rate-limited):\n%s", n, refusalLogRate, f.log)
	}
	if fds >= 0 {
		if now := openFDs(t); now-fds > maxFlows+8 {
			t.Fatalf("open fds grew by %d, want at most %d", now-fds, maxFlows+8)
		}
	}
}

// openFDs counts the process's open descriptors, -1 where it cannot.
func openFDs(t *testing.T) int {
	if runtime.GOOS != "linux" {
		return -1
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestDecideRanking(t *testing.T) {
	st := metrics.New().UDP
	md := func(sni string) protocols.DatagramInspectFunc {
		return func([][]byte) (protocols.Metadata, bool) { return protocols.Metadata{SNI: sni}, sni != "" }
	}
	tbl := NewTable([]Route{
		{Name: "plain", Detect: prefix("q"), Targets: []string{"x:1"}},
		{Name: "sni", Detect: prefix("q"), Inspect: md("a.example"), Conditions: protocols.Conditions{SNI: []string{"a.example"}}, Targets: []string{"x:1"}},
		{Name: "prio", Detect: prefix("p"), Priority: 5, Targets: []string{"x:1"}},
		{Name: "prio0", Detect: prefix("p"), Targets: []string{"x:1"}},
	}, st)
	for _, tc := range []struct {
		in   string
		want string
	}{{"q", "sni"}, {"p", "prio0"}, {"z", ""}} {
		r, more := tbl.Decide([][]byte{[]byte(tc.in)}, false)
		got := ""
		if r != nil {
			got = r.Name
		}
		if more || got != tc.want {
			t.Errorf("Decide(%q) = %q, more %v; want %q", tc.in, got, more, tc.want)
		}
	}
	// A conditional route whose metadata is incomplete holds the decision
	// until the bounds are reached, then the plain route wins.
	wait := NewTable([]Route{
		{Name: "plain", Detect: prefix("q"), Targets: []string{"x:1"}},
		{Name: "sni", Detect: prefix("q"), Inspect: md(""), Conditions: protocols.Conditions{SNI: []string{"a.example"}}, Targets: []string{"x:1"}},
	}, st)
	if r, more := wait.Decide([][]byte{[]byte("q")}, false); r != nil || !more {
		t.Fatalf("incomplete metadata: got %v, more %v; want more", r, more)
	}
	if r, _ := wait.Decide([][]byte{[]byte("q")}, true); r == nil || r.Name != "plain" {
		t.Fatalf("final: got %v, want plain", r)
	}
}

func waitFlows(t *testing.T, e *Engine, n int) {
	t.Helper()
	testnet.Eventually(t, 5*time.Second, func() bool { return e.Flows() == n }, "flows = %d", n)
}

// value reads a counter's or gauge's value.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

// A listener on every address (dual-stack where the system has IPv6)
// answers an IPv4 client from the address it wrote to.
func TestEveryAddressListener(t *testing.T) {
	st := metrics.New().UDP
	table := NewTable([]Route{{Name: "A", Detect: prefix("a"), Targets: []string{udptest.Echo(t, false)}}}, st)
	e := New(Options{Table: func() *Table { return table }, Stats: st, Sweep: time.Hour})
	t.Cleanup(e.Close)
	a, err := e.Listen(context.Background(), ":0")
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: a.(*net.UDPAddr).Port})
	if got := roundTrip(t, c, "a4"); got != "a4" {
		t.Fatalf("got %q", got)
	}
}

// With access_log, each flow's end writes one line with its counts.
func TestFlowAccessLine(t *testing.T) {
	var buf testnet.Buffer
	st := metrics.New().UDP
	table := NewTable([]Route{{Name: "A", Label: "A", Detect: prefix("a"), Targets: []string{udptest.Echo(t, false)}, IdleTimeout: time.Second}}, st)
	clk := &clock{}
	e := New(Options{Table: func() *Table { return table }, Settings: func() Settings { return Settings{AccessLog: true} }, Stats: st,
		Log: slog.New(slog.NewTextHandler(&buf, nil)), Now: clk.now, Sweep: time.Hour})
	t.Cleanup(e.Close)
	a, err := e.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, a.(*net.UDPAddr))
	roundTrip(t, c, "a1")
	roundTrip(t, c, "a22")
	// The answers were counted once the reader wrote them; wait for that.
	testnet.Eventually(t, 5*time.Second, func() bool { return value(t, st.Route("A").DatagramsDn) == 2 }, "answers counted")
	clk.add(2 * time.Second)
	e.Sweep(clk.now())
	line := buf.String()
	for _, want := range []string{`msg="udp flow ended"`, "protocol=A", "datagrams_up=2", "datagrams_down=2", "up=5", "down=5", "close=idle", "client=" + c.LocalAddr().String()} {
		if !strings.Contains(line, want) {
			t.Errorf("access line %q lacks %s", line, want)
		}
	}
}

// A route with udp_responses 1 (DNS's default) ends each flow when its
// answer came back: a resolver's pattern, a new source port per query,
// holds no socket per query after the answer, and loses no answer.
func TestFlowEndsWhenAnswered(t *testing.T) {
	st := metrics.New().UDP
	table := NewTable([]Route{{Name: "A", Detect: prefix("q"), Targets: []string{udptest.Echo(t, false)}}}, st)
	table.Routes()[0].state.responses = 1
	e := New(Options{Table: func() *Table { return table }, Stats: st, Sweep: time.Hour, Log: slog.New(slog.DiscardHandler)})
	t.Cleanup(e.Close)
	a, err := e.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fds := openFDs(t)
	const queries = 300
	for i := range queries {
		c, err := net.DialUDP("udp", nil, a.(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		msg := fmt.Sprintf("q%d", i)
		if got := roundTrip(t, c, msg); got != msg {
			t.Fatalf("query %d: answer %q", i, got)
		}
		c.Close()
	}
	// The last flow's table entry goes at the owner's next wake-up.
	testnet.Eventually(t, 5*time.Second, func() bool { e.Sweep(time.Now()); return e.Flows() == 0 }, "flows = %d after every answer, want 0", e.Flows())
	// A flow leaves the table before its end is counted: wait for the count.
	testnet.Eventually(t, 5*time.Second, func() bool { return value(t, st.Answered) == queries },
		"answered = %v, want %d", testnet.Later(func() string { return fmt.Sprint(value(t, st.Answered)) }), queries)
	if fds >= 0 {
		if now := openFDs(t); now-fds > 8 {
			t.Fatalf("open fds grew by %d after %d answered queries", now-fds, queries)
		}
	}
	// The same port asking again is a new flow, answered too.
	c := dial(t, a.(*net.UDPAddr))
	for i := range 3 {
		if got := roundTrip(t, c, fmt.Sprintf("q-again-%d", i)); got != fmt.Sprintf("q-again-%d", i) {
			t.Fatalf("query again %d: %q", i, got)
		}
	}
}

// A host-name target is resolved off the listener's owner; the flow's
// datagrams wait for it and then reach the backend in order.
func TestHostNameTargetDialledOffTheOwner(t *testing.T) {
	echo := udptest.Echo(t, true)
	_, port, _ := net.SplitHostPort(echo)
	if c, err := net.Dial("udp", "localhost:"+port); err != nil || c.RemoteAddr().(*net.UDPAddr).IP.String() != "127.0.0.1" {
		t.Skipf("localhost does not resolve to 127.0.0.1 first here: %v", err)
	} else {
		c.Close()
	}
	f := start(t, []Route{{Name: "two", Detect: twoStep, Targets: []string{"localhost:" + port}}}, Settings{})
	c := dial(t, f.addr)
	for _, m := range []string{"A", "B", "C"} {
		if _, err := c.Write([]byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	if got := []string{read(t, c), read(t, c), read(t, c)}; got[0] != "A|A" || got[1] != "A|B" || got[2] != "A|C" {
		t.Fatalf("got %q, want A|A, A|B, A|C", got)
	}
}

// udp_responses counts per datagram sent, as nginx's proxy_responses: a
// client with many queries outstanding on one port (dnsperf's way) gets
// every answer, and its flow ends only when none is owed.
func TestPipelinedQueriesAllAnswered(t *testing.T) {
	st := metrics.New().UDP
	table := NewTable([]Route{{Name: "A", Detect: prefix("q"), Targets: []string{udptest.Echo(t, false)}}}, st)
	table.Routes()[0].state.responses = 1
	e := New(Options{Table: func() *Table { return table }, Stats: st, Sweep: time.Hour, Log: slog.New(slog.DiscardHandler)})
	t.Cleanup(e.Close)
	a, err := e.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, a.(*net.UDPAddr))
	const rounds, outstanding = 20, 50
	for r := range rounds {
		want := map[string]bool{}
		for i := range outstanding {
			m := fmt.Sprintf("q%d-%d", r, i)
			want[m] = true
			if _, err := c.Write([]byte(m)); err != nil {
				t.Fatal(err)
			}
		}
		for len(want) > 0 {
			got := read(t, c)
			if !want[got] {
				t.Fatalf("round %d: unexpected answer %q", r, got)
			}
			delete(want, got)
		}
	}
	testnet.Eventually(t, 5*time.Second, func() bool { e.Sweep(time.Now()); return e.Flows() == 0 }, "flows = %d with nothing owed", e.Flows())
}

// expect and replied: a datagram counted before the last reply keeps the
// flow; once the last owed reply is taken, no datagram is counted on it.
func TestFlowOwesReplies(t *testing.T) {
	var f flow
	if !f.expect(2) || f.replied() || !f.expect(2) {
		t.Fatal("owed 2, one reply, 2 more: still open")
	}
	for range 2 {
		if f.replied() {
			t.Fatal("ended with replies owed")
		}
	}
	if !f.replied() || !f.answered() || f.expect(1) || f.replied() {
		t.Fatal("the last owed reply does not end the flow once and for all")
	}
}

// With several sockets on one address (SO_REUSEPORT), the kernel spreads
// the clients over them: each flow stays on its socket, every answer
// reaches its client, the per-source cap counts across sockets, and
// max_udp_flows bounds them all.
func TestSocketsShareOneAddress(t *testing.T) {
	if !reusePortOK {
		t.Skip("one socket per address here")
	}
	st := metrics.New().UDP
	table := NewTable([]Route{{Name: "A", Detect: prefix("a"), Targets: []string{udptest.Echo(t, true)}}}, st)
	var s atomic.Pointer[Settings]
	s.Store(&Settings{})
	e := New(Options{Table: func() *Table { return table }, Settings: func() Settings { return *s.Load() }, Stats: st, Sweep: time.Hour,
		Log: slog.New(slog.DiscardHandler), Sockets: 4})
	t.Cleanup(e.Close)
	a, err := e.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(e.Addrs()); n != 1 || len(e.lns) != 4 {
		t.Fatalf("Addrs %v over %d sockets, want one address over 4", e.Addrs(), len(e.lns))
	}
	const clients = 64
	var cs []*net.UDPConn
	for i := range clients {
		c := dial(t, a.(*net.UDPAddr))
		for r := range 3 {
			msg := fmt.Sprintf("a%d-%d", i, r)
			if got := roundTrip(t, c, msg); got != fmt.Sprintf("a%d-0|%s", i, msg) {
				t.Fatalf("client %d: %q", i, got)
			}
		}
		cs = append(cs, c)
	}
	used := 0
	for _, ln := range e.lns {
		var n int
		ln.call(func() { n = ln.t.len() })
		if n > 0 {
			used++
		}
	}
	if e.Flows() != clients || used < 2 {
		t.Fatalf("%d flows on %d sockets, want %d spread over several", e.Flows(), used, clients)
	}
	// A per-source cap of 12 admits 12 flows of 127.0.0.1 opened under
	// it, on whatever sockets they land; those opened before it do not
	// count.
	s.Store(&Settings{MaxFlowsPerSource: 12})
	ok := 0
	for range 10 {
		c := dial(t, a.(*net.UDPAddr))
		_, _ = c.Write([]byte("a"))
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Read(make([]byte, 64)); err == nil {
			ok++
		}
	}
	if ok != 10 {
		t.Fatalf("%d of 10 answered under the cap", ok)
	}
	ok = 0
	for range 5 {
		c := dial(t, a.(*net.UDPAddr))
		_, _ = c.Write([]byte("a"))
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Read(make([]byte, 64)); err == nil {
			ok++
		}
	}
	if ok != 2 || value(t, st.Refused(metrics.UDPPerSource)) != 3 {
		t.Fatalf("%d answered past the cap, %v refused", ok, value(t, st.Refused(metrics.UDPPerSource)))
	}
	_ = cs
}

// Passive health: flows of a request/response route (udp_responses) that
// get no reply within noReplyWindow put their target into back-off, and
// new flows go to the target that answers.
func TestSilentTargetSkipped(t *testing.T) {
	silent, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	echo := udptest.Echo(t, false)
	targets := []string{silent.LocalAddr().String(), echo}
	set, err := upstream.New([]upstream.Target{{Addr: targets[0], Weight: 1}, {Addr: targets[1], Weight: 1}}, upstream.Options{Strategy: upstream.First})
	if err != nil {
		t.Fatal(err)
	}
	f := start(t, []Route{{Name: "A", Detect: prefix("q"), Targets: targets}}, Settings{}, func(tb *Table) {
		tb.Routes()[0].state.responses = 1
		tb.Routes()[0].state.set = set
	})
	// Three flows to the first target, which never answers.
	for i := range 3 {
		c := dial(t, f.addr)
		if _, err := c.Write([]byte(fmt.Sprintf("q%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	waitFlows(t, f.e, 3)
	f.clock.add(noReplyWindow)
	f.e.Sweep(f.clock.now())
	if st := set.Status(); st[0].Up || !st[1].Up {
		t.Fatalf("after three silent flows: %+v", st)
	}
	c := dial(t, f.addr)
	if got := roundTrip(t, c, "q-next"); got != "q-next" {
		t.Fatalf("the next flow: %q", got)
	}
}

// SO_REUSEPORT joins only the engine's own sockets: a second engine (a
// second process) on a port in use fails to bind it, as without it.
func TestSecondBindOfAnAddressFails(t *testing.T) {
	e := New(Options{Log: slog.New(slog.DiscardHandler)})
	t.Cleanup(e.Close)
	a, err := e.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	other := New(Options{Log: slog.New(slog.DiscardHandler)})
	t.Cleanup(other.Close)
	if _, err := other.Listen(context.Background(), a.String()); err == nil {
		t.Fatalf("a second engine bound %s too", a)
	}
}
