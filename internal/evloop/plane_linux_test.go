//go:build linux

package evloop_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/config"
	"github.com/darkit/protoplex/internal/proxyproto"
	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/internal/udp/udptest"
	"github.com/darkit/protoplex/protocols"
)

// stuckAddr is testnet.StuckAddr, which this kernel must be able to give.
func stuckAddr(tb testing.TB) string {
	tb.Helper()
	addr, ok := testnet.StuckAddr(tb)
	if !ok {
		tb.Fatalf("connects to %s still complete with its accept queue full", addr)
	}
	return addr
}

// TestDrain: CloseAll ends every connection the plane holds — a forwarded
// pair, one still in identification, one whose backend connect the loop
// makes and one dialed off the loop, neither of which would ever complete
// — and Wait returns long before the dial timeout.
func TestDrain(t *testing.T) {
	r := drainEveryState(t)
	if n := r.closed("ECHO", "drain"); n != 1 {
		t.Errorf("ECHO closed by the drain = %v, want 1", n)
	}
	r.idle()
}

// TestDrainAccounting: every connection a drain closes is accounted for as
// on the goroutine path (conn.go): its access line says how it closed, and
// one whose backend dial the drain cancelled counts as dial_error.
func TestDrainAccounting(t *testing.T) {
	r := drainEveryState(t)
	r.idle()
	testnet.Eventually(t, bound, func() bool { return strings.Count(r.log.String(), "connection closed") == 4 },
		"not four access lines:\n%s", r.log)
	if strings.Contains(r.log.String(), `close=""`) {
		t.Errorf("an access line does not say how its connection closed:\n%s", r.log)
	}
	for _, p := range []string{"STUCK", "OFFLOOP"} {
		if n := r.closed(p, "dial_error"); n != 1 {
			t.Errorf("%s, its dial cancelled by the drain: closed as dial_error %v times, want 1", p, n)
		}
	}
}

// drainEveryState starts a plane holding a connection in each state a
// drain may find (holdEveryState), closes them all with CloseAll and checks
// that Wait returns and every client is closed.
func drainEveryState(t *testing.T) *rig {
	t.Helper()
	r, clients := holdEveryState(t)
	r.conns.CloseAll()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	if err := r.conns.Wait(ctx); err != nil {
		t.Fatalf("Wait after CloseAll: %v, %d connections left; log:\n%s", err, r.conns.Len(), r.log)
	}
	for name, c := range clients {
		if _, err := readAll(c.conn); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s: the client was not closed", name)
		}
	}
	// The UDP flows end when their engine stops: on their loops, which
	// close the upstream sockets and count and log each flow.
	r.udp.Close()
	if n := r.udp.Flows(); n != 0 {
		t.Errorf("%d UDP flows left after Close", n)
	}
	if n := r.metric("protoplex_udp_flows_active"); n != 0 {
		t.Errorf("protoplex_udp_flows_active = %v after Close", n)
	}
	if n := r.metric("protoplex_udp_pooled_sockets"); n != 0 {
		t.Errorf("protoplex_udp_pooled_sockets = %v after Close", n)
	}
	if !strings.Contains(r.log.String(), "protocol=UECHO") || !strings.Contains(r.log.String(), "close=closed") {
		t.Errorf("the forwarding UDP flow's end is not logged:\n%s", r.log)
	}
	return r
}

// holdEveryState starts a plane holding a connection in each state a
// drain may find — forwarding, identifying, connecting on the loop, dialed
// off the loop — and returns their clients by state.
func holdEveryState(t *testing.T) (*rig, map[string]held) {
	t.Helper()
	stuck := stuckAddr(t)
	offLoop := routeFor("OFFLOOP", "SRC", stuck)
	offLoop.Source = []string{"127.0.0.1"} // a source address: dialed on a goroutine
	echo := testnet.Echo(t)
	udpEcho := udptest.Echo(t, false)
	r := newRig(t, []*protocols.Protocol{
		route("ECHO", echo),
		routeFor("STUCK", "STUCK", stuck),
		offLoop,
		{Name: "UECHO", Target: udpEcho, Datagram: datagramPrefix("PING")},
		{Name: "UTWO", Target: udpEcho, Datagram: twoDatagrams},
		protocols.NewDNSProtocol(udpEcho), // a query echoed is its answer
	}, func(s *setup) { s.srv.DialTimeout = time.Minute; s.udp = true })

	forwarded := r.echoed()
	identifying := r.dial()
	if _, err := identifying.Write([]byte("HEL")); err != nil { // a valid beginning: identification waits
		t.Fatal(err)
	}
	connecting := r.dial()
	if _, err := connecting.Write([]byte("STUCK")); err != nil {
		t.Fatal(err)
	}
	dialing := r.dial()
	if _, err := dialing.Write([]byte("SRC")); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, bound, func() bool {
		return r.conns.Len() == 4 && r.metric("protoplex_identified_total", "protocol=STUCK") == 1 &&
			r.metric("protoplex_identified_total", "protocol=OFFLOOP") == 1
	}, "not all four connections are where the test needs them; log:\n%s", r.log)
	// UDP flows on the loops: one forwarding (its echo came back), one
	// identifying (its detector waits for a second datagram).
	udpForwarding := r.dialUDP()
	if got := r.roundTripUDP(udpForwarding, "PING1"); got != "PING1" {
		t.Fatalf("UDP echo: %q", got)
	}
	udpIdentifying := r.dialUDP()
	if _, err := udpIdentifying.Write([]byte("A")); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, bound, func() bool { return r.udp.Flows() == 2 }, "UDP flows = %d, want 2", r.udp.Flows())
	// An upstream socket waiting in its listener's pool: a DNS flow ended
	// answered.
	q := udptest.DNS(1, "pooled.test", false)
	if got := r.roundTripUDP(r.dialUDP(), string(q)); got != string(q) {
		t.Fatalf("DNS echo: %q", got)
	}
	testnet.Eventually(t, bound, func() bool { return r.metric("protoplex_udp_pooled_sockets") == 1 && r.udp.Flows() == 2 },
		"no socket pooled, or the DNS flow not ended: %d flows", r.udp.Flows())
	return r, map[string]held{
		"forwarded":   {conn: forwarded, target: echo},
		"identifying": {conn: identifying},
		"connecting":  {conn: connecting, target: stuck},
		"dialing":     {conn: dialing, target: stuck},
	}
}

// TestDialFailure: a target that refuses is counted against it, and a
// client with no other target is closed, counted as dial_error; with a
// second, live target the connection fails over to it. The same holds for
// a target named by host name, dialed off the loop.
func TestDialFailure(t *testing.T) {
	for _, tc := range []struct{ name, host string }{{"ip", "127.0.0.1"}, {"host name", "localhost"}} {
		t.Run(tc.name, func(t *testing.T) {
			refused := fmt.Sprintf("%s:%d", tc.host, testnet.FreePort(t))
			live := testnet.Echo(t)
			alone := routeFor("ALONE", "ALONE", refused)
			failover := routeFor("FAILOVER", "HELLO", refused+","+live)
			failover.Balance = "first" // the refused target first
			r := newRig(t, []*protocols.Protocol{alone, failover})

			r.turnedAway([]byte("ALONE"), "a client whose only target refuses")
			r.waitMetric(1, "protoplex_connections_closed_total", "protocol=ALONE", "reason=dial_error")
			r.waitMetric(1, "protoplex_dial_errors_total", "protocol=ALONE", "target="+refused)

			want := payload(1000)
			sameBytes(t, "through the failover", r.exchange(want), want)
			r.waitMetric(1, "protoplex_connections_closed_total", "protocol=FAILOVER", "reason=done")
			if n := r.metric("protoplex_dial_errors_total", "protocol=FAILOVER", "target="+refused); n != 1 {
				t.Errorf("dial errors of the refused target = %v, want 1", n)
			}
			if n := r.closed("FAILOVER", "dial_error"); n != 0 {
				t.Errorf("a connection that failed over counted as dial_error (%v)", n)
			}
			r.idle()
		})
	}
}

// TestHostNameTarget: a target named by host name is dialed off the loop
// and the connection forwards as any other.
func TestHostNameTarget(t *testing.T) {
	_, port, _ := net.SplitHostPort(testnet.Echo(t))
	r := newRig(t, []*protocols.Protocol{route("NAMED", "localhost:"+port)})
	for _, size := range []int{100, 1 << 20} {
		want := payload(size)
		sameBytes(t, fmt.Sprintf("%d bytes", size), r.exchange(want), want)
	}
	r.waitMetric(2, "protoplex_connections_closed_total", "protocol=NAMED", "reason=done")
	r.idle()
}

// TestHandler: a route served in-process gets a net.Conn whose first read
// yields exactly the bytes identification read, then what the client sends
// after, then EOF; what it writes reaches the client.
func TestHandler(t *testing.T) {
	type seen struct {
		first, all string
		remote     string
		err        error
	}
	started := make(chan struct{}, 1)
	got := make(chan seen, 1)
	p := &protocols.Protocol{Name: "INPROC", FirstBytes: []byte("H"), Detect: detect("HELLO"), Handler: func(c net.Conn) {
		defer c.Close()
		started <- struct{}{}
		var s seen
		s.remote = c.RemoteAddr().String()
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		s.first = string(buf[:n])
		rest, rerr := io.ReadAll(c)
		s.all, s.err = s.first+string(rest), errors.Join(err, rerr)
		io.WriteString(c, "handled:"+s.all)
		got <- s
	}}
	r := newRig(t, []*protocols.Protocol{p})
	c := r.dial()
	if _, err := c.Write([]byte("HELLO")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(bound):
		t.Fatal("the handler did not start")
	}
	if _, err := c.Write([]byte(" world")); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	reply, err := readAll(c)
	if err != nil {
		t.Fatal(err)
	}
	s := <-got
	if s.first != "HELLO" || s.all != "HELLO world" || s.err != nil {
		t.Errorf("the handler read %q first, %q in all (%v); want \"HELLO\", then \"HELLO world\"", s.first, s.all, s.err)
	}
	if s.remote != c.LocalAddr().String() {
		t.Errorf("the handler's RemoteAddr is %s, want the client's %s", s.remote, c.LocalAddr())
	}
	if string(reply) != "handled:HELLO world" {
		t.Errorf("the client read %q", reply)
	}
	c.Close()
	r.idle()
}

// TestSendProxy: a route with send_proxy writes a PROXY header naming the
// client and the address it connected to, then the replay, then the rest.
func TestSendProxy(t *testing.T) {
	for _, version := range []string{"v1", "v2"} {
		t.Run(version, func(t *testing.T) {
			type seen struct {
				h    proxyproto.Header
				data []byte
				err  error
			}
			got := make(chan seen, 1)
			backend := testnet.Serve(t, func(c net.Conn) {
				buf := make([]byte, 4096)
				h, n, err := proxyproto.Read(c, buf, bound)
				var rest []byte
				if err == nil {
					rest, err = readAll(c)
				}
				got <- seen{h, append(buf[:n:n], rest...), err}
			})
			p := route("PROXIED", backend)
			p.SendProxy = version
			r := newRig(t, []*protocols.Protocol{p})
			want := payload(100 << 10)
			c := r.dial()
			if _, err := c.Write(want); err != nil {
				t.Fatal(err)
			}
			c.CloseWrite()
			var s seen
			select {
			case s = <-got:
			case <-time.After(bound):
				t.Fatal("the backend got nothing")
			}
			if s.err != nil {
				t.Fatalf("backend: %v", s.err)
			}
			client := c.LocalAddr().(*net.TCPAddr).AddrPort()
			dest := netip.MustParseAddrPort(r.addr)
			if s.h.Local || s.h.Source != client || s.h.Dest != dest {
				t.Errorf("PROXY header %+v, want source %v, destination %v", s.h, client, dest)
			}
			sameBytes(t, "after the header", s.data, want)
			if _, err := readAll(c); err != nil {
				t.Errorf("client: %v", err)
			}
			r.waitMetric(1, "protoplex_connections_closed_total", "protocol=PROXIED", "reason=done")
			r.idle()
		})
	}
}

// TestAcceptProxy: behind a trusted front, the client a PROXY header
// names is the one the guard judges and the access log shows; an
// untrusted source claiming an address with a header is refused.
func TestAcceptProxy(t *testing.T) {
	const banned, allowed = "203.0.113.7:4000", "198.51.100.9:5555"
	header := func(src string) []byte {
		return proxyproto.AppendV1(nil, proxyproto.Header{Source: netip.MustParseAddrPort(src), Dest: netip.MustParseAddrPort("192.0.2.1:443")})
	}
	echo := testnet.Echo(t)
	trusted := newRig(t, []*protocols.Protocol{route("ECHO", echo)}, func(s *setup) {
		s.srv.AcceptProxy = true
		s.trusted = config.Prefixes{netip.MustParsePrefix("127.0.0.0/8")}
		s.guard.Blacklist = []string{"203.0.113.7"}
	})

	got := trusted.exchange(append(header(allowed), "HELLO from afar"...))
	if string(got) != "HELLO from afar" {
		t.Errorf("echo behind the front: %q", got)
	}
	trusted.waitMetric(1, "protoplex_connections_closed_total", "protocol=ECHO", "reason=done")
	testnet.Eventually(t, bound, func() bool { return strings.Contains(trusted.log.String(), "client="+allowed) },
		"the access log does not name the client of the PROXY header %s:\n%s", allowed, trusted.log)

	trusted.turnedAway(append(header(banned), "HELLO"...), "a banned client behind the front")
	trusted.waitMetric(1, "protoplex_connections_refused_total", "reason=blacklist")
	trusted.idle()

	untrusted := newRig(t, []*protocols.Protocol{route("ECHO", echo)}, func(s *setup) {
		s.srv.AcceptProxy = true
		s.trusted = config.Prefixes{netip.MustParsePrefix("10.0.0.0/8")}
	})
	untrusted.turnedAway(append(header(allowed), "HELLO"...), "an untrusted source sending a PROXY header")
	untrusted.waitMetric(1, "protoplex_connections_refused_total", "reason=proxy_header")
	untrusted.idle()
}

// unixListener listens on a Unix socket in the test's directory, closed
// when the test ends.
func unixListener(tb testing.TB) net.Listener {
	tb.Helper()
	ln, err := net.Listen("unix", filepath.Join(tb.TempDir(), "s"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	return ln
}

// TestUnixSockets: the plane serves a Unix listener and dials "unix:"
// targets, and forwards byte for byte, half-close included, between any
// mix of TCP and Unix sockets.
func TestUnixSockets(t *testing.T) {
	backend := testnet.ServeOn(t, unixListener(t), func(c net.Conn) {
		io.Copy(c, c)
		c.(*net.UnixConn).CloseWrite()
	})
	for _, tc := range []struct {
		name   string
		front  func(testing.TB) net.Listener
		target string
	}{
		{"tcp to unix", nil, "unix:" + backend},
		{"unix to unix", unixListener, "unix:" + backend},
		{"unix to tcp", unixListener, testnet.Echo(t)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, []*protocols.Protocol{route("MIXED", tc.target)}, func(s *setup) { s.listen = tc.front })
			network := "tcp"
			if tc.front != nil {
				network = "unix"
			}
			c, err := net.DialTimeout(network, r.addr, bound)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(bound))
			want := payload(1 << 20)
			wrote := make(chan error, 1)
			go func() {
				_, err := c.Write(want)
				if err == nil {
					err = c.(interface{ CloseWrite() error }).CloseWrite()
				}
				wrote <- err
			}()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Errorf("read after %d bytes: %v", len(got), err)
			}
			if err := <-wrote; err != nil {
				t.Errorf("write: %v", err)
			}
			sameBytes(t, "echo", got, want)
			r.waitMetric(1, "protoplex_connections_closed_total", "protocol=MIXED", "reason=done")
			r.idle()
		})
	}
}

// TestRefusals: past max_connections a client is closed at once and
// counted, as is one whose first bytes no route takes.
func TestRefusals(t *testing.T) {
	r := newRig(t, []*protocols.Protocol{route("ECHO", testnet.Echo(t))}, func(s *setup) { s.srv.MaxConnections = 1 })
	held := r.echoed()
	r.turnedAway([]byte("HELLO"), "a client past max_connections")
	r.waitMetric(1, "protoplex_connections_refused_total", "reason=max_connections")
	held.Close()
	r.idle()
	r.turnedAway([]byte("NOT A PROTOCOL"), "a client no route takes")
	r.waitMetric(1, "protoplex_identify_failures_total", "reason=no_match")
	r.idle()
	if n := r.metric("protoplex_connections_accepted_total"); n != 3 {
		t.Errorf("accepted = %v, want 3", n)
	}
}
