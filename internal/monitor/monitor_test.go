package monitor

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/darkit/protoplex/internal/testnet"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// wait bounds waiting for the server's view of a connection, which changes
// on its own goroutines after the client's call has returned.
const wait = 10 * time.Second

// probePath is the one path the test servers answer, with "ok\n".
const probePath = "/probe"

// start serves the test handler within lim until the test ends.
func start(t *testing.T, lim Limits) (string, *Server) {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc(probePath, func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	s, err := Serve("127.0.0.1:0", mux, lim)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s.Addr(), s
}

// dialFrom connects to addr from 127.0.0.host, a source of its own.
func dialFrom(host byte, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, host)}, Timeout: 10 * time.Second}
	return d.Dial("tcp", addr)
}

// needSources skips the test where the loopback network is only
// 127.0.0.1 (macOS by default), so dialFrom cannot act as other sources.
func needSources(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no loopback address besides 127.0.0.1: %v", err)
	}
	ln.Close()
}

// probeFrom sends one request from 127.0.0.host on a fresh connection and
// returns the status, or an error when the connection was turned away.
func probeFrom(host byte, addr string) (int, error) {
	c, err := dialFrom(host, addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	resp, err := testnet.KeepAliveGet(c, probePath)
	if err != nil {
		return 0, err
	}
	return resp.StatusCode, nil
}

// idleKeepAlive connects to s from 127.0.0.host, makes one request and
// waits until the server counts idle connections, this one included; the
// connection is closed when the test ends.
func idleKeepAlive(t *testing.T, s *Server, host byte, idle int) net.Conn {
	t.Helper()
	c, err := dialFrom(host, s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if resp, err := testnet.KeepAliveGet(c, probePath); err != nil || resp.StatusCode != 200 {
		t.Fatalf("keep-alive client from 127.0.0.%d: %v %v", host, resp, err)
	}
	testnet.Eventually(t, wait, func() bool { return s.Idle() == idle }, "%d connections idle after a request", idle)
	return c
}

// TestDefaultLimits: the limits the monitoring ports document, applied by
// Serve as given.
func TestDefaultLimits(t *testing.T) {
	want := Limits{
		ReadHeaderTimeout: 3 * time.Second,
		ReadTimeout:       5 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    8 << 10,
		MaxConns:          64,
		MaxConnsPerSource: 8,
	}
	if got := DefaultLimits(); got != want {
		t.Fatalf("DefaultLimits() = %+v, want %+v", got, want)
	}
	_, s := start(t, DefaultLimits())
	if got := s.Limits(); got != want {
		t.Fatalf("served with %+v, want %+v", got, want)
	}
}

// TestCloseStopsServing: Close closes a connection that was open, and a
// second Close does nothing.
func TestCloseStopsServing(t *testing.T) {
	mux := http.NewServeMux()
	s, err := Serve("127.0.0.1:0", mux, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testnet.Eventually(t, wait, func() bool { return s.Active() == 1 }, "s.Active() == 1")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("connection open after Close: read %d", n)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestSourceOf: connections are counted per IPv4 address and per IPv6 /64;
// an IPv4-mapped IPv6 address is its IPv4 address.
func TestSourceOf(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"192.0.2.7:1234", "192.0.2.7"},
		{"[::ffff:192.0.2.7]:1234", "192.0.2.7"},
		{"[2001:db8:1:2:aaaa::1]:1234", "2001:db8:1:2::"},
		{"[2001:db8:1:2:bbbb::9]:80", "2001:db8:1:2::"},
		{"[fe80::1%eth0]:80", "fe80::"},
	} {
		ap := netip.MustParseAddrPort(tc.addr)
		if got := sourceOf(net.TCPAddrFromAddrPort(ap)); got != netip.MustParseAddr(tc.want) {
			t.Errorf("sourceOf(%s) = %s, want %s", tc.addr, got, tc.want)
		}
	}
	if got := sourceOf(&net.UnixAddr{Name: "x", Net: "unix"}); got.IsValid() {
		t.Errorf("sourceOf(unix address) = %s, want the zero Addr", got)
	}
}

// TestIdleClientsTimeOut: with the cap taken by clients that never send a
// request, a fresh probe is turned away at once (not queued), and answered
// again once the clients leave, or once the server has timed them out.
func TestIdleClientsTimeOut(t *testing.T) {
	lim := DefaultLimits()
	lim.MaxConns = 4
	lim.ReadHeaderTimeout = time.Hour // the cap stays taken until the clients go
	addr, s := start(t, lim)
	var idle []net.Conn
	for range 10 {
		if c, err := net.Dial("tcp", addr); err == nil { // over the cap: maybe reset before Dial returns
			defer c.Close()
			idle = append(idle, c)
		}
	}
	testnet.Eventually(t, wait, func() bool { return s.Active() == 4 && s.Refused() == 6 }, "s.Active() == 4 && s.Refused() == 6")
	if probe, err := net.Dial("tcp", addr); err == nil {
		if _, err := testnet.KeepAliveGet(probe, probePath); err == nil {
			t.Fatal("a probe over the cap was served")
		}
		probe.Close()
	}
	if s.Refused() != 7 {
		t.Fatalf("probe over the cap: %d refused, want 7", s.Refused())
	}
	for _, c := range idle {
		c.Close()
	}
	testnet.Eventually(t, wait, func() bool { return s.Active() == 0 }, "s.Active() == 0")
	if code, err := probeFrom(1, addr); err != nil || code != 200 {
		t.Fatalf("after the idle clients left: %d %v", code, err)
	}

	// The server times silent clients out by itself.
	lim.ReadHeaderTimeout = 100 * time.Millisecond
	addr2, s2 := start(t, lim)
	var silent []net.Conn
	for range 4 {
		c, err := net.Dial("tcp", addr2)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		silent = append(silent, c)
	}
	awaitTimeouts(t, s2, addr2, silent)
}

// awaitTimeouts checks that the server closes every one of held by itself,
// frees their slots, and then answers a probe.
func awaitTimeouts(t *testing.T, s *Server, addr string, held []net.Conn) {
	t.Helper()
	for i, c := range held {
		c.SetReadDeadline(time.Now().Add(wait))
		if _, err := io.Copy(io.Discard, c); err != nil { // nil: the server closed it
			t.Fatalf("held connection %d not timed out by the server: %v", i, err)
		}
	}
	testnet.Eventually(t, wait, func() bool { return s.Active() == 0 }, "the slots of the timed-out connections freed")
	if code, err := probeFrom(100, addr); err != nil || code != 200 {
		t.Fatalf("probe after the held connections timed out: %d %v", code, err)
	}
}

// TestCloseIdleKeepAlive: a keep-alive connection left idle after a
// request is closed by the server after the idle timeout, and its slot
// freed.
func TestCloseIdleKeepAlive(t *testing.T) {
	lim := DefaultLimits()
	lim.IdleTimeout = 100 * time.Millisecond
	addr, s := start(t, lim)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if resp, err := testnet.KeepAliveGet(c, probePath); err != nil || resp.StatusCode != 200 || resp.Close {
		t.Fatalf("%v %v", resp, err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("idle keep-alive connection not closed by the server: %d %v", n, err)
	}
	testnet.Eventually(t, wait, func() bool { return s.Active() == 0 }, "s.Active() == 0")
}

// TestPerSourceShare: one source opening more connections than the port's
// cap, none of them ever sending a request, holds only its share; the rest
// are refused at once, and a probe from another source is answered.
func TestPerSourceShare(t *testing.T) {
	needSources(t)
	lim := DefaultLimits()
	lim.MaxConns, lim.MaxConnsPerSource = 16, 4
	lim.ReadHeaderTimeout = time.Hour // held until the test closes them
	addr, s := start(t, lim)
	const opened = 20
	for range opened {
		if c, err := dialFrom(1, addr); err == nil { // refused ones may be reset before Dial returns
			defer c.Close()
		}
	}
	testnet.Eventually(t, wait, func() bool { return s.Active()+int(s.Refused()) == opened }, "s.Active()+int(s.Refused()) == opened")
	if held := s.Active(); held != lim.MaxConnsPerSource {
		t.Fatalf("one source holds %d connections, want its share of %d", held, lim.MaxConnsPerSource)
	}
	if code, err := probeFrom(2, addr); err != nil || code != 200 {
		t.Fatalf("probe from another source: %d %v", code, err)
	}
	if code, err := probeFrom(1, addr); err == nil {
		t.Fatalf("a probe over the source's share was served: %d", code)
	}
}

// TestEvictsIdleKeepAlive: with the port full of keep-alive connections
// from many sources, each idle after one request, a new probe is answered:
// the connection idle the longest is closed to make room.
func TestEvictsIdleKeepAlive(t *testing.T) {
	needSources(t)
	lim := DefaultLimits()
	lim.MaxConns = 8
	lim.IdleTimeout = time.Hour // only eviction frees a slot
	addr, s := start(t, lim)
	var held []net.Conn
	for i := range lim.MaxConns {
		// Each idle after the one before, so held[0] is idle the longest.
		held = append(held, idleKeepAlive(t, s, byte(10+i), i+1))
	}
	if code, err := probeFrom(100, addr); err != nil || code != 200 {
		t.Fatalf("probe with the port full of idle keep-alives: %d %v", code, err)
	}
	if n := s.Evicted(); n != 1 {
		t.Fatalf("%d connections evicted, want 1", n)
	}
	held[0].SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := held[0].Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the longest idle connection was not closed: %d %v", n, err)
	}
	if resp, err := testnet.KeepAliveGet(held[1], probePath); err != nil || resp.StatusCode != 200 {
		t.Fatalf("a more recent keep-alive connection: %v %v", resp, err)
	}
}

// TestRefusesWhenAllBusy: with every held connection in the middle of a
// request whose header never ends (a new connection, or a keep-alive one
// that has started its next request), a new probe is refused at once, and
// answered once the server has timed the held ones out.
func TestRefusesWhenAllBusy(t *testing.T) {
	needSources(t)
	const partial = "GET " + probePath + " HTTP/1.1\r\nHost: x\r\n"
	for _, timeout := range []time.Duration{time.Hour, 200 * time.Millisecond} {
		lim := DefaultLimits()
		lim.MaxConns = 4
		lim.ReadHeaderTimeout = timeout
		lim.IdleTimeout = time.Hour
		addr, s := start(t, lim)
		var held []net.Conn
		for i := range lim.MaxConns {
			var c net.Conn
			keepAlive := i%2 == 1 // one request done, the next begun
			if keepAlive {
				c = idleKeepAlive(t, s, byte(10+i), 1)
			} else {
				var err error
				if c, err = dialFrom(byte(10+i), addr); err != nil {
					t.Fatal(err)
				}
				defer c.Close()
			}
			if _, err := io.WriteString(c, partial); err != nil {
				t.Fatal(err)
			}
			if keepAlive {
				testnet.Eventually(t, wait, func() bool { return s.Idle() == 0 }, "s.Idle() == 0") // its next request has begun
			}
			held = append(held, c)
		}
		testnet.Eventually(t, wait, func() bool { return s.Active() == lim.MaxConns }, "s.Active() == lim.MaxConns")
		if timeout == time.Hour {
			if code, err := probeFrom(100, addr); err == nil {
				t.Fatalf("a probe was served by evicting a connection mid-request: %d", code)
			}
			if n := s.Evicted(); n != 0 {
				t.Fatalf("%d connections mid-request evicted", n)
			}
			continue
		}
		awaitTimeouts(t, s, addr, held)
	}
}

// TestEvictsFromLargestSource: with the port full of connections that
// never send a request, all from one source allowed the whole port, a
// probe from another source is answered: a connection of the source
// holding far more than its fair part is closed to make room.
func TestEvictsFromLargestSource(t *testing.T) {
	needSources(t)
	lim := DefaultLimits()
	lim.MaxConns, lim.MaxConnsPerSource = 6, 6
	lim.ReadHeaderTimeout = time.Hour
	addr, s := start(t, lim)
	for range lim.MaxConns {
		c, err := dialFrom(1, addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	testnet.Eventually(t, wait, func() bool { return s.Active() == lim.MaxConns }, "s.Active() == lim.MaxConns")
	if code, err := probeFrom(2, addr); err != nil || code != 200 {
		t.Fatalf("probe from a second source: %d %v", code, err)
	}
	if n := s.Evicted(); n != 1 {
		t.Fatalf("%d connections evicted, want 1", n)
	}
}

// TestCloseBounded: Close returns within CloseGrace (plus scheduling) even
// while clients hold connections mid-request (half a header) or connected
// without a byte sent, as a TCP probe does; a request in flight that ends
// within the grace is answered.
func TestCloseBounded(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/slow", func(w http.ResponseWriter, _ *http.Request) {
		close(entered)
		<-release
		io.WriteString(w, "done\n")
	})
	s, err := Serve("127.0.0.1:0", mux, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	partial, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer partial.Close()
	io.WriteString(partial, "GET /probe HTTP/1.1\r\n")
	silent, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	slow, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	io.WriteString(slow, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	testnet.Eventually(t, wait, func() bool { return s.Active() == 3 }, "s.Active() == 3")
	select {
	case <-entered:
	case <-time.After(wait):
		t.Fatal("the slow request never reached its handler")
	}

	closed := make(chan time.Duration, 1)
	begin := time.Now()
	go func() { s.Close(); closed <- time.Since(begin) }()
	close(release) // the slow request ends within the grace
	slow.SetReadDeadline(time.Now().Add(wait))
	if resp, err := http.ReadResponse(bufio.NewReader(slow), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("request in flight at Close: %v %v", resp, err)
	}
	select {
	case d := <-closed:
		if d > CloseGrace+400*time.Millisecond {
			t.Fatalf("Close took %v with connections held mid-request, want about CloseGrace (%v)", d, CloseGrace)
		}
	case <-time.After(wait):
		t.Fatal("Close did not return")
	}
	for _, c := range []net.Conn{partial, silent} {
		c.SetReadDeadline(time.Now().Add(wait))
		if n, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("connection open after Close: read %d", n)
		}
	}
}
