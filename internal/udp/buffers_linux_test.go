package udp

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/darkit/protoplex/internal/testnet"
)

// silent is a UDP server on 127.0.0.1 that never answers: a flow to it
// stays routed (a request/response flow awaits its answer), so its
// upstream socket can be looked at.
func silent(t *testing.T) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.LocalAddr().String()
}

// rcvbuf is SO_RCVBUF of fd as the kernel reports it (twice what was
// asked for, for its bookkeeping); t.Error and -1 when it cannot be read.
// It may run on the listener's owner: no t.Fatal.
func rcvbuf(t *testing.T, fd int) int {
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
	if err != nil {
		t.Error(err)
		return -1
	}
	return v
}

// upRcvbuf is SO_RCVBUF of the upstream socket of ln's routed flow of the
// route named route, or -1 while there is none.
func upRcvbuf(t *testing.T, ln *listener, route string) int {
	got := -1
	ln.call(func() {
		for _, f := range ln.t.flows {
			if f.state != stRouted || f.route.Name != route {
				continue
			}
			switch up := f.up.(type) {
			case *rawUp:
				got = rcvbuf(t, int(up.fd))
			default:
				rc, err := up.SyscallConn()
				if err != nil {
					t.Error(err)
					return
				}
				_ = rc.Control(func(fd uintptr) { got = rcvbuf(t, int(fd)) })
			}
		}
	})
	return got
}

// A long-lived flow's upstream socket (a route without udp_responses)
// gets the larger receive buffer, also when its target is a host name
// (dialled off the owner); a DNS flow's (udp_responses 1) keeps the
// default, read back from the sockets themselves.
func TestFlowUpstreamReceiveBuffer(t *testing.T) {
	probe, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := probe.SyscallConn()
	def := -1
	_ = rc.Control(func(fd uintptr) { def = rcvbuf(t, int(fd)) })
	probe.Close()
	max, err := readSysctl("/proc/sys/net/core/rmem_max")
	if err != nil || 2*min(max, flowBuffer) <= def {
		t.Skipf("net.core.rmem_max %d (%v) allows no buffer above the default %d", max, err, def)
	}

	_, port, _ := net.SplitHostPort(silent(t))
	f := start(t, []Route{
		{Name: "long", Detect: prefix("L"), Targets: []string{silent(t)}},
		{Name: "named", Detect: prefix("N"), Targets: []string{net.JoinHostPort("localhost", port)}},
		{Name: "dns", Detect: prefix("Q"), Targets: []string{silent(t)}},
	}, Settings{}, func(tb *Table) {
		for _, r := range tb.Routes() {
			if r.Name == "dns" {
				r.state.responses = 1
			}
		}
	})
	for _, msg := range []string{"L1", "N1", "Q1"} {
		c := dial(t, f.addr)
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	var long, named, dns int
	testnet.Eventually(t, 5*time.Second, func() bool {
		long, named, dns = upRcvbuf(t, f.ln, "long"), upRcvbuf(t, f.ln, "named"), upRcvbuf(t, f.ln, "dns")
		return long >= 0 && named >= 0 && dns >= 0
	}, "no routed flows")
	want := 2 * min(max, flowBuffer)
	if long != want {
		t.Errorf("a long-lived flow's upstream SO_RCVBUF = %d, want %d (the default is %d)", long, want, def)
	}
	if named != want {
		t.Errorf("a long-lived flow to a host name: upstream SO_RCVBUF = %d, want %d (the default is %d)", named, want, def)
	}
	if dns != def {
		t.Errorf("a DNS flow's upstream SO_RCVBUF = %d, want the default %d", dns, def)
	}
}

// readSysctl reads an integer from /proc/sys.
func readSysctl(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}
