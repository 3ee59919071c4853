package upstream

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
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
		a, b := newCounting(t), newCounting(t)
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
			defer c.Close()
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
		c.Close()
		done()
	}
}
