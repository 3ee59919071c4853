package protoplex

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/darkit/protoplex/internal/proxy"
	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/protocols"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serveTest runs pm on an ephemeral loopback port until the test ends,
// then closes it.
func serveTest(t *testing.T, pm *ProtocolManager) string {
	t.Helper()
	if dp := os.Getenv("PROTOPLEX_TEST_DATA_PLANE"); dp != "" { // make unit runs both
		s := *pm.settings.Load()
		s.DataPlane = dp
		pm.settings.Store(&s)
	}
	t.Cleanup(func() { pm.Close() }) // after Start's cleanup has stopped Serve
	return testnet.Start(t, pm.Serve)
}

// roundTrip sends send, half-closes and returns what came back before the
// peer closed (empty when the connection was refused or reset).
func roundTrip(t *testing.T, addr, send string) string {
	t.Helper()
	got, _ := testnet.RoundTrip(addr, send)
	return got
}

// scrape parses the manager's /metrics output into "name{labels}" → value.
func scrape(t *testing.T, pm *ProtocolManager) map[string]float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	pm.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			key := name
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[key] = m.Gauge.GetValue()
			case m.Histogram != nil:
				out[key+"_count"] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return out
}

func TestRoutesByFirstBytes(t *testing.T) {
	pm := NewProtocolManager(WithLogger(discardLogger()))
	sshBackend := testnet.Banner(t, "ssh-backend:")
	redisBackend := testnet.Banner(t, "redis-backend:")
	if err := pm.AddProtocol(protocols.NewSSHProtocol(sshBackend)); err != nil {
		t.Fatal(err)
	}
	pm.AddProtocol(protocols.NewRedisProtocol(redisBackend))
	addr := serveTest(t, pm)

	if got := roundTrip(t, addr, "SSH-2.0-test\r\n"); got != "ssh-backend:SSH-2.0-test\r\n" {
		t.Fatalf("ssh: %q", got)
	}
	if got := roundTrip(t, addr, "PING\r\n"); got != "redis-backend:PING\r\n" {
		t.Fatalf("redis: %q", got)
	}
	// Byte counters are added when a connection ends, just after the reply.
	up := "protoplex_forwarded_bytes_total{direction=client_to_backend,protocol=SSH,route=SSH}"
	waitFor(t, func() bool { return scrape(t, pm)[up] == float64(len("SSH-2.0-test\r\n")) })
	m := scrape(t, pm)
	if m["protoplex_identified_total{protocol=SSH,route=SSH}"] != 1 || m["protoplex_identified_total{protocol=Redis,route=Redis}"] != 1 {
		t.Fatalf("identified metrics: %v", m)
	}
	if got := pm.GetMetrics().Identified["SSH"]; got != 1 {
		t.Fatalf("GetMetrics identified SSH = %d", got)
	}
}

// The seed's in-process sample: no backend, the handler answers.
func TestInternalProtocolReplaysBytes(t *testing.T) {
	pm := NewProtocolManager(WithLogger(discardLogger()))
	pm.AddProtocol(CreateInternalProtocol(protocols.NewRedisProtocol, func(c net.Conn) {
		defer c.Close()
		line, _ := bufio.NewReader(c).ReadString('\n')
		io.WriteString(c, "+PONG "+line)
	}))
	addr := serveTest(t, pm)
	if got := roundTrip(t, addr, "PING\r\n"); got != "+PONG PING\r\n" {
		t.Fatalf("got %q", got)
	}
}

func TestOptionValidation(t *testing.T) {
	for _, opts := range [][]Option{
		{WithIdentifyMinBytes(0)},
		{WithIdentifyMinBytes(-1)},
		{WithBufferSize(1024), WithIdentifyMinBytes(2048)},
		{WithMaxConnections(0)},
	} {
		pm := NewProtocolManager(opts...)
		if pm.Err() == nil {
			t.Fatalf("options %d accepted", len(opts))
		}
		if err := pm.RunServer(context.Background(), "127.0.0.1:0"); err == nil || err.Error() != pm.Err().Error() {
			t.Fatalf("RunServer: %v", err)
		}
		pm.Close()
	}
	if pm := NewProtocolManager(WithBufferSize(4096), WithIdentifyMinBytes(4096)); pm.Err() != nil {
		t.Fatal(pm.Err())
	} else {
		pm.Close()
	}
}

func TestUnidentifiedClosedAndCounted(t *testing.T) {
	pm := NewProtocolManager(WithLogger(discardLogger()))
	pm.AddProtocol(protocols.NewSSHProtocol(testnet.Banner(t, "x")))
	addr := serveTest(t, pm)
	if got := roundTrip(t, addr, "SSX-garbage\r\n"); got != "" {
		t.Fatalf("garbage got a reply: %q", got)
	}
	waitFor(t, func() bool { return scrape(t, pm)["protoplex_identify_failures_total{reason=no_match}"] == 1 })
}

func TestMaxConnectionsRefusesOverCap(t *testing.T) {
	pm := NewProtocolManager(WithLogger(discardLogger()), WithMaxConnections(2))
	pm.AddProtocol(protocols.NewSSHProtocol(testnet.Banner(t, "x")))
	addr := serveTest(t, pm)
	var held []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	waitFor(t, func() bool { return pm.GetMetrics().ActiveConnections == 2 })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, ErrClosed) {
		t.Fatalf("over-cap connection not closed: %v", err)
	}
	c.Close()
	if v := scrape(t, pm)["protoplex_connections_refused_total{reason=max_connections}"]; v != 1 {
		t.Fatalf("refused = %v", v)
	}
	for _, h := range held {
		h.Close()
	}
}

// TestDrainWaitsForStreams: cancelling the context stops accepting at once,
// lets an active stream finish, and only then returns.
func TestDrainWaitsForStreams(t *testing.T) {
	release := make(chan struct{})
	backend := testnet.Serve(t, func(c net.Conn) {
		bufio.NewReader(c).ReadString('\n')
		io.WriteString(c, "first\n")
		<-release
		io.WriteString(c, "second\n")
	})
	pm := NewProtocolManager(WithLogger(discardLogger()), WithGracefulShutdownTimeout(time.Minute))
	pm.AddProtocol(protocols.NewSSHProtocol(backend))
	ln := testnet.Listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pm.Serve(ctx, ln) }()
	defer pm.Close()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "SSH-2.0-x\r\n")
	r := bufio.NewReader(c)
	if l, _ := r.ReadString('\n'); l != "first\n" {
		t.Fatalf("got %q", l)
	}
	cancel()
	waitFor(t, pm.Draining)
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Fatal("still accepting while draining")
	}
	select {
	case <-done:
		t.Fatal("returned before the stream finished")
	default:
	}
	close(release)
	if l, _ := r.ReadString('\n'); l != "second\n" {
		t.Fatalf("stream cut: %q", l)
	}
	c.Close() // the client is done too: the connection ends, the drain with it
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// drainSetup serves an SSH route to backend with a 100 ms drain deadline,
// connects one SSH client (half-closed when halfClose) and waits until it
// is identified; cancel starts the drain and done receives Serve's result.
func drainSetup(t *testing.T, backend string, halfClose bool) (pm *ProtocolManager, c net.Conn, cancel func(), done <-chan error) {
	t.Helper()
	pm = NewProtocolManager(WithLogger(discardLogger()), WithGracefulShutdownTimeout(100*time.Millisecond))
	pm.AddProtocol(protocols.NewSSHProtocol(backend))
	ln := testnet.Listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- pm.Serve(ctx, ln) }()
	t.Cleanup(func() { pm.Close() })
	c, _ = net.Dial("tcp", ln.Addr().String())
	t.Cleanup(func() { c.Close() })
	io.WriteString(c, "SSH-2.0-x\r\n")
	if halfClose {
		c.(*net.TCPConn).CloseWrite()
	}
	waitFor(t, func() bool { return pm.GetMetrics().Identified["SSH"] == 1 })
	return pm, c, cancel, served
}

func TestDrainDeadlineClosesStragglers(t *testing.T) {
	backend := testnet.Serve(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	pm, c, cancel, done := drainSetup(t, backend, false)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF && !isReset(err) {
		t.Fatalf("straggler not closed: %v", err)
	}
	if v := scrape(t, pm)["protoplex_connections_closed_total{protocol=SSH,reason=drain,route=SSH}"]; v != 1 {
		t.Fatalf("closed{drain} = %v", v)
	}
}

// TestDrainDeadlineClosesHalfClosed: a client that half-closed its side
// while the backend stays silent is still closed at the drain deadline (the
// backend side too), so Serve returns.
func TestDrainDeadlineClosesHalfClosed(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	backend := testnet.Serve(t, func(c net.Conn) {
		io.Copy(io.Discard, c) // reads the client's EOF, answers nothing
		<-hold                 // and keeps its side open
	})
	_, _, cancel, done := drainSetup(t, backend, true)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return: the half-closed connection outlived the drain deadline")
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op)
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// waitFor waits up to 10 s for cond.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	testnet.Eventually(t, 10*time.Second, cond, "condition not met within 10s")
}

// TestFailoverAndPassiveHealth: with a dead first target, every client is
// served by the live one; the dead target's failed dial is counted (there
// is no backend_up without health checks: TestBackendUpTruthful).
func TestFailoverAndPassiveHealth(t *testing.T) {
	const deadAddr = "127.0.0.1:1" // refused; a freed ephemeral port could be taken again
	live := testnet.Banner(t, "live:")
	pm := NewProtocolManager(WithLogger(discardLogger()))
	pm.AddProtocol(protocols.NewSSHProtocol(deadAddr + "," + live))
	addr := serveTest(t, pm)
	for i := 0; i < 6; i++ {
		if got := roundTrip(t, addr, "SSH-2.0-x\r\n"); got != "live:SSH-2.0-x\r\n" {
			t.Fatalf("client %d: %q", i, got)
		}
	}
	m := scrape(t, pm)
	// The dead target is skipped while down: one failed dial, not six.
	if v := m["protoplex_dial_errors_total{protocol=SSH,route=SSH,target="+deadAddr+"}"]; v != 1 {
		t.Fatalf("dial errors = %v", v)
	}
	gm := pm.GetMetrics()
	if gm.ConnectionPool.ConnectionsCreated != 6 || gm.MemoryPool.PoolStats.MediumPool.Gets != 6 || gm.MemoryPool.PoolStats.MediumPool.InUse != 0 {
		t.Fatalf("typed metrics: %+v %+v", gm.ConnectionPool, gm.MemoryPool.PoolStats.MediumPool)
	}
}

func TestGetMetricsRuntime(t *testing.T) {
	pm := NewProtocolManager(WithLogger(discardLogger()))
	defer pm.Close()
	runtime.GC()
	m := pm.GetMetrics()
	if m.MemoryPool.MemoryStats.RuntimeAllocBytes == 0 || m.MemoryPool.GCStats.GCRuns == 0 {
		t.Fatalf("%+v", m.MemoryPool)
	}
}

// TestListenLeavesKeepAliveOff: connections accepted from Listen carry no
// SO_KEEPALIVE (net.Listen would set it, four syscalls per connection);
// WithTCPKeepAlive turns it on per connection.
func TestListenLeavesKeepAliveOff(t *testing.T) {
	ln, err := Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if keepAliveOn(t, s) {
		t.Fatal("accepted connection has SO_KEEPALIVE on")
	}

	// Through the manager: an in-process handler sees the client socket.
	got := make(chan bool, 1)
	pm := NewProtocolManager(WithLogger(discardLogger()), WithTCPKeepAlive(30*time.Second))
	pm.AddProtocol(&protocols.Protocol{Name: "Probe", FirstBytes: []byte("P"), Detect: func(b []byte) protocols.Result {
		return protocols.Match
	}, Handler: func(c net.Conn) {
		defer c.Close()
		got <- keepAliveOn(t, c)
	}})
	addr := serveTest(t, pm)
	pc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	io.WriteString(pc, "P")
	if on := <-got; !on {
		t.Fatal("WithTCPKeepAlive did not turn keepalive on")
	}
}

// keepAliveOn reads SO_KEEPALIVE of the TCP socket under c.
func keepAliveOn(t *testing.T, c net.Conn) bool {
	t.Helper()
	if rc, ok := c.(*proxy.ReplayConn); ok {
		c = rc.Conn
	}
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	raw.Control(func(fd uintptr) { v, err = keepAliveOf(fd) })
	if errors.Is(err, errors.ErrUnsupported) {
		t.Skip("socket options are read on Unix only")
	}
	if err != nil {
		t.Fatal(err)
	}
	return v != 0
}

// TestBackendUpTruthful: backend_up is what health checks find, nothing
// else. A route without checks has no series: not 1 for a dead target no
// client was routed to yet, not 0 for as long as nobody dials again after
// one failed dial. A route with checks has one series per target from the
// start, and the checks alone move it: a dead target goes to 0 and a live
// one stays 1 with no client at all.
func TestBackendUpTruthful(t *testing.T) {
	const dead = "127.0.0.1:1" // refused
	live := testnet.Banner(t, "live:")
	pm := NewProtocolManager(WithLogger(discardLogger()))
	if err := pm.AddProtocol(protocols.NewSSHProtocol(dead)); err != nil {
		t.Fatal(err)
	}
	checked := protocols.NewHTTPProtocol(dead + "," + live)
	checked.Health = protocols.HealthConfig{Interval: 20 * time.Millisecond, Rise: 1, Fall: 1}
	if err := pm.AddProtocol(checked); err != nil {
		t.Fatal(err)
	}
	unchecked := func() []string {
		var out []string
		for k := range scrape(t, pm) {
			if strings.HasPrefix(k, "protoplex_backend_up{protocol=SSH") {
				out = append(out, k)
			}
		}
		return out
	}
	if s := unchecked(); len(s) != 0 {
		t.Fatalf("backend_up of a route without checks before any dial: %v", s)
	}
	roundTrip(t, serveTest(t, pm), "SSH-2.0-x\r\n") // the dead target refuses
	if v := scrape(t, pm)["protoplex_dial_errors_total{protocol=SSH,route=SSH,target="+dead+"}"]; v != 1 {
		t.Fatalf("dial errors %v, want 1", v)
	}
	if s := unchecked(); len(s) != 0 {
		t.Fatalf("backend_up of a route without checks after a failed dial: %v", s)
	}
	up := func(target string) float64 {
		v, ok := scrape(t, pm)["protoplex_backend_up{protocol=HTTP,route=HTTP,target="+target+"}"]
		if !ok {
			return -1
		}
		return v
	}
	waitFor(t, func() bool { return up(dead) == 0 })
	if v := up(live); v != 1 {
		t.Fatalf("backend_up of the live checked target: %v", v)
	}
}
