//go:build linux

package upstream

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

var (
	timewait        = flag.Bool("timewait", false, "measure how many backend connections fit before TIME_WAIT exhausts the ports (see docs/operations.md)")
	timewaitSources = flag.String("timewait.sources", "1,4", "source address counts to measure, from 127.0.0.2 up")
	timewaitFor     = flag.Duration("timewait.for", 10*time.Second, "time budget per measurement")
	timewaitWorkers = flag.Int("timewait.c", 8, "concurrent dialers")
	timewaitNoPort  = flag.Bool("timewait.noport", true, "set IP_BIND_ADDRESS_NO_PORT on source-bound dials (false: bind picks the port)")
)

// TestTimeWaitCapacity dials one loopback backend as fast as it can and
// closes first (as protoplex does towards a backend when the client closed
// first), so every connection leaves a TIME_WAIT on the dialing side. It
// reports per source count how many connections succeeded, the rate, the
// first error and the TIME_WAIT sockets left. Opt-in (-timewait); run each
// measurement in a network namespace of its own (a fresh TIME_WAIT table,
// sysctls set without touching the host), e.g.:
//
//	go test -c -o /tmp/upstream.test ./internal/upstream
//	unshare -rn sh -c 'ip link set lo up; sysctl -qw net.ipv4.tcp_tw_reuse=0 net.ipv4.ip_local_port_range="40000 40999";
//	  /tmp/upstream.test -test.run TimeWaitCapacity -test.v -timewait -timewait.sources 1,4'
func TestTimeWaitCapacity(t *testing.T) {
	if !*timewait {
		t.Skip("measurement: run with -timewait")
	}
	t.Logf("sysctl: ip_local_port_range=%q tcp_tw_reuse=%s tcp_max_tw_buckets=%s",
		sysctl("net/ipv4/ip_local_port_range"), sysctl("net/ipv4/tcp_tw_reuse"), sysctl("net/ipv4/tcp_max_tw_buckets"))
	for _, f := range strings.Split(*timewaitSources, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 250 {
			t.Fatalf("-timewait.sources: %q", f)
		}
		t.Run(fmt.Sprintf("sources=%d", n), func(t *testing.T) { measureTimeWait(t, n, *timewaitNoPort) })
	}
}

func measureTimeWait(t *testing.T, sources int, noPort bool) {
	// The backend closes after the dialer: passive close, no TIME_WAIT there.
	backend := netip.MustParseAddrPort(testnet.Serve(t, func(c net.Conn) { io.Copy(io.Discard, c) }))
	var src []netip.Addr
	if sources > 1 {
		var err error
		src, err = ParseSource([]string{fmt.Sprintf("127.0.0.2-127.0.0.%d", 1+sources)})
		if err != nil {
			t.Fatal(err)
		}
	}
	s, err := New([]Target{{Addr: backend.String(), Weight: 1}}, Options{Source: src})
	if err != nil {
		t.Fatal(err)
	}
	if !noPort {
		s.dialer.Control = nil
	}
	twBefore := countTimeWait(t, backend)
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var firstErrAt atomic.Int64
	start := time.Now()
	stop := start.Add(*timewaitFor)
	var dialers sync.WaitGroup
	for w := 0; w < *timewaitWorkers; w++ {
		dialers.Add(1)
		go func() {
			defer dialers.Done()
			for time.Now().Before(stop) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				c, _, done, err := s.Dial(ctx, nil, nil)
				cancel()
				if err != nil {
					if failed.Add(1) == 1 {
						firstErr.Store(err.Error())
						firstErrAt.Store(ok.Load())
					}
					continue
				}
				c.Close()
				done()
				ok.Add(1)
			}
		}()
	}
	dialers.Wait()
	el := time.Since(start)
	fe, _ := firstErr.Load().(string)
	t.Logf("sources=%d ip_bind_address_no_port=%v: %d connections in %s (%.0f/s), %d failed dials; first failure after %d: %s; TIME_WAIT towards the backend: %d",
		sources, noPort, ok.Load(), el.Round(time.Millisecond), float64(ok.Load())/el.Seconds(), failed.Load(), firstErrAt.Load(), fe,
		countTimeWait(t, backend)-twBefore)
}

func sysctl(name string) string {
	b, _ := os.ReadFile("/proc/sys/" + name)
	return strings.Join(strings.Fields(string(b)), " ")
}

// countTimeWait counts the TIME_WAIT sockets connected to addr.
func countTimeWait(t *testing.T, addr netip.AddrPort) int {
	n := 0
	err := testnet.EachTCPSocket(func(s testnet.Socket) {
		if s.State == testnet.StateTimeWait && s.Remote == addr {
			n++
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
