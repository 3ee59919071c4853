// Package testnet holds what tests of several packages need to run real
// servers on loopback: listeners and accept loops that end with the test,
// fake backends, a client round trip, a poll with a bound (Eventually), a
// buffer for output written concurrently, subprocesses killed at the end of
// the test (a real etcd among them), the kernel's TCP socket table, and
// files written or the test failed. It imports only the standard library,
// so any package's tests can use it.
package testnet

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// FreePort returns a loopback port that was free a moment ago, for a server
// that takes its port on the command line. It is drawn below the kernel's
// ephemeral range: a port from bind(:0) lies in that range, where any
// concurrently running test's outgoing connection or bind(:0) may take it
// before the server binds it (or after the server released it).
func FreePort(tb testing.TB) int {
	tb.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil {
				low = v
			}
		}
	}
	const floor = 10000
	for range 100 {
		if low <= floor {
			break
		}
		port := floor + rand.IntN(low-floor)
		if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			ln.Close()
			return port
		}
	}
	ln := Listen(tb)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// FreeAddr is FreePort as a "127.0.0.1:port" address.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	return fmt.Sprintf("127.0.0.1:%d", FreePort(tb))
}
