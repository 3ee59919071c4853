//go:build linux

package evloop_test

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/protocols"
)

// TestGCStress: round trips through the plane complete while another
// goroutine collects garbage without pause, and collections complete while
// the loops sleep in epoll_wait: a loop never keeps the GC from stopping
// the world.
func TestGCStress(t *testing.T) {
	const workers, each = 4, 400
	r := newRig(t, []*protocols.Protocol{route("ECHO", testnet.Echo(t))})
	old := debug.SetGCPercent(1)
	defer debug.SetGCPercent(old)

	// The loops have nothing to do: each sleeps in epoll_wait.
	idle := make(chan error, 1)
	go func() {
		for range 50 {
			runtime.GC()
		}
		idle <- nil
	}()
	if err := waitFor(idle); err != nil {
		t.Fatalf("collections with the loops asleep: %v", err)
	}

	stop := make(chan struct{})
	collected := make(chan int, 1)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				collected <- n
				return
			default:
				runtime.GC()
				n++
			}
		}
	}()
	errs := make(chan error, workers)
	var trips atomic.Int64 // completed, for the message of a failure
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				send := fmt.Sprintf("HELLO %d/%d %s", w, i, make([]byte, 100*i))
				got, err := testnet.RoundTrip(r.addr, send)
				if err != nil || got != send {
					errs <- fmt.Errorf("worker %d, trip %d: %d bytes back of %d, %v", w, i, len(got), len(send), err)
					return
				}
				trips.Add(1)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-time.After(12 * bound): // a stall, not a slow machine: each trip takes a millisecond or so
		err = fmt.Errorf("%d of %d round trips done after %v", trips.Load(), workers*each, 12*bound)
	}
	close(stop)
	t.Logf("%d collections during %d round trips", <-collected, trips.Load())
	if err != nil {
		t.Fatalf("round trips under GC stress: %v; log:\n%s", err, r.log)
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	r.waitMetric(workers*each, "protoplex_connections_closed_total", "protocol=ECHO", "reason=done")
	r.idle()
}

// TestNoLeak: after connections of every kind — forwarded through the
// buffer and through splice pipes, handed to a handler, failed to dial,
// dialed off the loop, drained — and the plane's Close, the process holds
// no more file descriptors than before.
func TestNoLeak(t *testing.T) {
	before := fdTable(t)
	var log *testnet.Buffer
	t.Run("traffic", func(t *testing.T) {
		echo := testnet.Echo(t)
		_, port, _ := net.SplitHostPort(echo)
		handler := &protocols.Protocol{Name: "INPROC", FirstBytes: []byte("I"), Detect: detect("INPROC"), Handler: func(c net.Conn) {
			defer c.Close()
			io.Copy(c, c)
		}}
		r := newRig(t, []*protocols.Protocol{
			route("ECHO", echo),
			routeFor("NAMED", "NAMED", "localhost:"+port),
			routeFor("REFUSED", "REFUSED", testnet.FreeAddr(t)),
			handler,
		}, func(s *setup) { s.env.SpliceAfter = 1 << 10 })
		log = r.log
		for _, send := range [][]byte{payload(100), payload(4 << 20), []byte("NAMED route"), []byte("INPROC route")} {
			sameBytes(t, string(send[:5]), r.exchange(send), send)
		}
		r.turnedAway([]byte("REFUSED"), "a client whose target refuses")
		r.echoed()
		r.conns.CloseAll()
		r.idle()
	})
	// The runtime may open its poller's descriptors on first use. The
	// backends' io.Copy splices through pipes the net package pools: a
	// collection or two closes them.
	testnet.Eventually(t, bound, func() bool { runtime.GC(); return openFDs(t) <= len(before)+2 },
		"descriptors open before:\n%s\nafter:\n%s\nlog:\n%s", strings.Join(before, "\n"), testnet.Later(func() string { return strings.Join(fdTable(t), "\n") }), log)
}

// BenchmarkPlaneConnRoundTrip is one short connection through the plane:
// connect, send, read the echo until the backend closes, close.
func BenchmarkPlaneConnRoundTrip(b *testing.B) {
	r := newRig(b, []*protocols.Protocol{route("ECHO", testnet.Echo(b))}, func(s *setup) {
		s.srv.AccessLog, s.level = false, slog.LevelWarn // no access line: the benchmark measures the plane
	})
	send := []byte("HELLO benchmark\n")
	buf := make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			b.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(bound))
		if _, err := c.Write(send); err != nil {
			b.Fatal(err)
		}
		c.(*net.TCPConn).CloseWrite()
		n, err := io.ReadFull(c, buf[:len(send)])
		if err != nil || n != len(send) {
			b.Fatalf("echo: %d bytes, %v", n, err)
		}
		if _, err := c.Read(buf); err != io.EOF {
			b.Fatalf("after the echo: %v, want EOF", err)
		}
		c.Close()
	}
}

// TestDrainDuringBulk: a drain that closes pairs in the middle of bulk
// transfers both ways — where the loop's fairness cap keeps them queued
// for another pass — leaves no descriptor behind once the plane is closed.
func TestDrainDuringBulk(t *testing.T) {
	before := fdTable(t)
	var log *testnet.Buffer
	t.Run("bulk", func(t *testing.T) {
		r := newRig(t, []*protocols.Protocol{route("ECHO", testnet.Echo(t))})
		log = r.log
		chunk := payload(1 << 20)
		for range 10 {
			var wg sync.WaitGroup
			var read atomic.Int64
			for range 2 {
				c := r.dial()
				wg.Add(2)
				go func() {
					defer wg.Done()
					for {
						if _, err := c.Write(chunk); err != nil {
							return
						}
					}
				}()
				go func() {
					defer wg.Done()
					buf := make([]byte, 256<<10)
					for {
						n, err := c.Read(buf)
						read.Add(int64(n))
						if err != nil {
							return
						}
					}
				}()
			}
			testnet.Eventually(t, bound, func() bool { return read.Load() > 32<<20 }, "the bulk transfers do not flow")
			r.conns.CloseAll()
			r.idle()
			wg.Wait() // both ends closed: the clients' reads and writes fail
		}
	})
	testnet.Eventually(t, bound, func() bool { runtime.GC(); return openFDs(t) <= len(before)+2 },
		"descriptors open before:\n%s\nafter:\n%s\nlog:\n%s", strings.Join(before, "\n"), testnet.Later(func() string { return strings.Join(fdTable(t), "\n") }), log)
}
