package upstream

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"

	"github.com/darkit/protoplex/internal/testnet"
)

// ipLocalPortRange is IP_LOCAL_PORT_RANGE (Linux 6.3+): a per-socket
// ephemeral range, so the test can exhaust a range of its own without
// touching the host's.
const ipLocalPortRange = 51

// TestDialSharesPortsAcrossBackends: a backend dial leaves the choice of
// the local port to connect(), which needs the port unique per 4-tuple only
// and can reuse a TIME_WAIT one (tcp_tw_reuse). An explicit bind(addr:0)
// before connect picks a port no other socket holds at all, so ports in
// TIME_WAIT towards one backend exhaust the range for every backend. With
// all 8 ports of the range held by connections to backend A, a dial to
// backend B must still get one of them; with or without source addresses.
func TestDialSharesPortsAcrossBackends(t *testing.T) {
	// Inside the default ephemeral range (a per-socket range outside it is
	// ignored); a port another process binds there only shortens the run.
	const lo, hi = 60990, 60997
	narrow := func(prev func(string, string, syscall.RawConn) error) func(string, string, syscall.RawConn) error {
		return func(network, address string, c syscall.RawConn) error {
			if prev != nil {
				if err := prev(network, address, c); err != nil {
					return err
				}
			}
			var serr error
			c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipLocalPortRange, hi<<16|lo)
			})
			return serr
		}
	}
	for _, source := range [][]string{nil, {"127.0.0.2"}} {
		a, b := backendOffRange(t, lo, hi), backendOffRange(t, lo, hi)
		src, err := ParseSource(source)
		if err != nil {
			t.Fatal(err)
		}
		set := func(addr string) *Set {
			s, err := New([]Target{{Addr: addr, Weight: 1}}, Options{Source: src})
			if err != nil {
				t.Fatal(err)
			}
			s.dialer.Control = narrow(s.dialer.Control)
			return s
		}
		toA, toB := set(a.ln.Addr().String()), set(b.ln.Addr().String())
		// Towards A until the range is exhausted.
		var held []net.Conn
		for len(held) <= hi-lo {
			c, _, done, err := toA.Dial(context.Background(), nil, nil)
			if errors.Is(err, syscall.ENOPROTOOPT) {
				t.Skip("kernel without IP_LOCAL_PORT_RANGE")
			}
			if err != nil {
				break
			}
			defer done()
			defer closeNoTimeWait(c)
			held = append(held, c)
		}
		for _, c := range held {
			if p := netip.MustParseAddrPort(c.LocalAddr().String()).Port(); p < lo || p > hi {
				t.Fatalf("local port %d outside the socket's range", p)
			}
		}
		if len(held) == 0 {
			t.Fatalf("source %v: no port of the range usable towards A", source)
		}
		c, _, done, err := toB.Dial(context.Background(), nil, nil)
		if err != nil {
			t.Fatalf("source %v: every port held towards A, dial to B failed: %v", source, err)
		}
		closeNoTimeWait(c)
		done()
	}
}

// backendOffRange is a counting backend on a port that no socket with a
// local port in [lo, hi] is connected to. A listener port is often handed
// out again within a minute, and the TIME_WAITs an earlier run (-count, the
// unit then the race pass of make test) left from each port of the range
// towards it would hold every 4-tuple the test needs: the dials would fail
// with EADDRNOTAVAIL whatever the product does. Rejected listeners stay
// open until a good one is found, so each try is a new port.
func backendOffRange(t *testing.T, lo, hi int) *counting {
	t.Helper()
	var rejected []net.Listener
	defer func() {
		for _, ln := range rejected {
			ln.Close()
		}
	}()
	for range 1000 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if !connectedFromRange(t, lo, hi, ln.Addr().(*net.TCPAddr).Port) {
			return countOn(t, ln)
		}
		rejected = append(rejected, ln)
	}
	t.Fatalf("every listener port tried has sockets from ports %d-%d towards it", lo, hi)
	return nil
}

// connectedFromRange says whether any TCP socket, in any state (TIME_WAIT
// included), has a local port in [lo, hi] and remote port port.
func connectedFromRange(t *testing.T, lo, hi, port int) bool {
	t.Helper()
	found := false
	err := testnet.EachTCPSocket(func(s testnet.Socket) {
		local := int(s.Local.Port())
		found = found || (local >= lo && local <= hi && int(s.Remote.Port()) == port)
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// closeNoTimeWait closes c with a reset, so this run leaves no TIME_WAIT
// from the range for the next one.
func closeNoTimeWait(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}
