//go:build linux

package e2e

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/darkit/protoplex"
	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/protocols"
)

var (
	soak        = flag.Bool("soak", false, "run the soak test (see TestSoak)")
	soakConns   = flag.Int("soak.conns", 1_000_000, "soak: connections in all")
	soakSources = flag.Int("soak.sources", 16, "soak: loopback source addresses 127.0.0.2.. for both legs (1..250)")
	soakBudget  = flag.Duration("soak.budget", 12*time.Minute, "soak: wall-clock budget; the test fails if the connections do not fit in it")
)

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (linux/in.h): bind the
// source address only, connect() picks the port per 4-tuple.
const ipBindAddressNoPort = 0x18

// TestSoak pushes -soak.conns mixed good and bad connections (3 in 4 good:
// an SSH banner echoed back through the backend; 1 in 4 garbage then
// close); every good connection's bytes must arrive intact.
//
//	go test -run '^TestSoak$' -timeout 15m ./e2e -args -soak
//
// Every connection leaves a TIME_WAIT on each leg's active closer: the
// client closes first towards protoplex, protoplex (propagating the client's
// half-close) closes first towards the backend. Both legs are spread over
// -soak.sources loopback addresses (clients bind them, protoplex dials the
// backend from them through Protocol.Source) so neither leg depends on one
// address's ephemeral range. The test logs the rate, peak RSS and the
// TIME_WAIT sockets by leg and holder.
func TestSoak(t *testing.T) {
	if !*soak {
		t.Skip("soak test: run with -soak")
	}
	total, nsrc := *soakConns, *soakSources
	if nsrc < 1 || nsrc > 250 {
		t.Fatalf("-soak.sources %d: want 1..250", nsrc)
	}
	sources := make([]netip.Addr, nsrc)
	for i := range sources {
		sources[i] = netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + i)})
	}
	backend := testnet.Echo(t)
	ssh := protocols.NewSSHProtocol(backend)
	ssh.Source = []string{fmt.Sprintf("%s-%s", sources[0], sources[nsrc-1])}
	addr, _ := startMuxWith(t, []protoplex.Option{protoplex.WithIdentifyTimeout(time.Second), protoplex.WithMaxConnections(8000)}, ssh)

	muxPort, backendPort := portOf(addr), portOf(backend)
	var peakTW atomic.Int64
	sampleDone := make(chan struct{})
	stopSampling := make(chan struct{})
	go func() { // TIME_WAIT peak, sampled: reading the socket table costs as much as it holds
		defer close(sampleDone)
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
				if n := int64(timeWaits(muxPort, backendPort).total()); n > peakTW.Load() {
					peakTW.Store(n)
				}
			}
		}
	}()

	start := time.Now()
	deadline := start.Add(*soakBudget)
	var next, good, bad, errs atomic.Int64
	var firstErr atomic.Value
	fail := func(err error) {
		if errs.Add(1) == 1 {
			firstErr.Store(err.Error())
		}
	}
	var wg sync.WaitGroup
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256)
			for {
				i := next.Add(1)
				if i > int64(total) || time.Now().After(deadline) {
					return
				}
				d := net.Dialer{
					Timeout:   10 * time.Second,
					LocalAddr: &net.TCPAddr{IP: sources[int(i)%nsrc].AsSlice()},
					Control:   bindNoPort,
				}
				c, err := d.Dial("tcp", addr)
				if err != nil {
					fail(err)
					continue
				}
				if i%4 == 0 { // bad: garbage then close
					c.Write([]byte{0xFF, 0, 1, 2})
					c.Close()
					bad.Add(1)
					continue
				}
				msg := fmt.Sprintf("SSH-2.0-soak-%d\r\n", i)
				c.SetDeadline(time.Now().Add(10 * time.Second))
				io.WriteString(c, msg)
				c.(*net.TCPConn).CloseWrite()
				n, err := io.ReadFull(c, buf[:len(msg)])
				c.Close()
				if string(buf[:n]) != msg {
					fail(fmt.Errorf("connection %d: got %q (%v)", i, buf[:n], err))
					continue
				}
				good.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stopSampling)
	<-sampleDone
	tw := timeWaits(muxPort, backendPort)
	rss := "?"
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "VmHWM:") {
				rss = strings.TrimSpace(strings.TrimPrefix(l, "VmHWM:"))
			}
		}
	}
	ran := good.Load() + bad.Load() + errs.Load()
	t.Logf("soak: %d connections (%d good, %d bad), %d errors, %s (%.0f/s), %d source addresses, peak RSS %s",
		ran, good.Load(), bad.Load(), errs.Load(), elapsed.Round(time.Second), float64(ran)/elapsed.Seconds(), nsrc, rss)
	t.Logf("soak: TIME_WAIT at the end: client leg held by the client %d, by protoplex %d; backend leg held by protoplex %d, by the backend %d; peak sampled %d",
		tw.clientLegClient, tw.clientLegMux, tw.backendLegMux, tw.backendLegBackend, max(peakTW.Load(), int64(tw.total())))
	if errs.Load() != 0 {
		t.Errorf("%d connections failed; first: %v", errs.Load(), firstErr.Load())
	}
	if ran < int64(total) {
		t.Errorf("only %d of %d connections within -soak.budget %s", ran, total, *soakBudget)
	}
}

func bindNoPort(_, _ string, c syscall.RawConn) error {
	var serr error
	c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
	return serr
}

func portOf(addr string) int {
	return int(netip.MustParseAddrPort(addr).Port())
}

// twCount is the TIME_WAIT sockets of the soak, by leg and by the side
// holding them (the side that closed first).
type twCount struct {
	clientLegClient, clientLegMux, backendLegMux, backendLegBackend int
}

func (c twCount) total() int {
	return c.clientLegClient + c.clientLegMux + c.backendLegMux + c.backendLegBackend
}

// timeWaits counts the TIME_WAIT sockets by leg and holder: the holder's
// address is the local one.
func timeWaits(muxPort, backendPort int) twCount {
	var c twCount
	testnet.EachTCPSocket(func(s testnet.Socket) {
		if s.State != testnet.StateTimeWait {
			return
		}
		switch local, remote := int(s.Local.Port()), int(s.Remote.Port()); {
		case remote == muxPort:
			c.clientLegClient++
		case local == muxPort:
			c.clientLegMux++
		case remote == backendPort:
			c.backendLegMux++
		case local == backendPort:
			c.backendLegBackend++
		}
	})
	return c
}
