// Package testnet holds what tests of several packages need to run real
// servers on loopback.
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
