package udp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/metrics"
	"github.com/darkit/protoplex/internal/udp/udptest"
)

// BenchmarkEcho measures request/answer round trips of 64-byte datagrams
// to a loopback UDP echo, directly and through the engine, with 1 and 32
// concurrent clients: datagrams/s (both directions counted once per round
// trip) and the p50/p99 round-trip latency.
//
//	go test -run - -bench Echo -benchtime 3s ./internal/udp/
func BenchmarkEcho(b *testing.B) {
	echo := udptest.Echo(b, false)
	st := newBenchEngine(b, echo)
	for _, clients := range []int{1, 32} {
		b.Run(fmt.Sprintf("direct/clients=%d", clients), func(b *testing.B) { roundTrips(b, echo, clients) })
		b.Run(fmt.Sprintf("protoplex/clients=%d", clients), func(b *testing.B) { roundTrips(b, st, clients) })
	}
}

// BenchmarkResolver is the resolver's pattern: every query from a new
// source port, so every round trip is a new flow, ended by its answer
// (udp_responses 1).
//
//	go test -run - -bench Resolver -benchtime 3s ./internal/udp/
func BenchmarkResolver(b *testing.B) {
	echo := udptest.Echo(b, false)
	st := newBenchEngine(b, echo, 1)
	for _, clients := range []int{1, 32} {
		b.Run(fmt.Sprintf("direct/clients=%d", clients), func(b *testing.B) { roundTripsNewPort(b, echo, clients) })
		b.Run(fmt.Sprintf("protoplex/clients=%d", clients), func(b *testing.B) { roundTripsNewPort(b, st, clients) })
	}
}

func roundTripsNewPort(b *testing.B, addr string, clients int) {
	var wg sync.WaitGroup
	var ok, lost atomic.Int64
	per := b.N/clients + 1
	b.ResetTimer()
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg, buf := make([]byte, 64), make([]byte, 128)
			copy(msg, "a")
			for i := range per {
				c, err := net.Dial("udp", addr)
				if err != nil {
					b.Error(err)
					return
				}
				binary.BigEndian.PutUint64(msg[1:], uint64(i))
				if _, err := c.Write(msg); err == nil && answered(c, buf, msg) {
					ok.Add(1)
				} else {
					lost.Add(1)
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(ok.Load())/time.Since(start).Seconds(), "roundtrips/s")
	b.ReportMetric(float64(lost.Load()), "lost")
	b.ReportMetric(0, "ns/op")
}

func newBenchEngine(b *testing.B, target string, responses ...int) string {
	table := NewTable([]Route{{Name: "bench", Detect: prefix("a"), Targets: []string{target}}}, metrics.New().UDP)
	if len(responses) > 0 {
		table.Routes()[0].state.responses = responses[0]
	}
	// Every run dials new clients from 127.0.0.1: no per-source cap.
	e := New(Options{Table: func() *Table { return table }, Settings: func() Settings { return Settings{MaxFlowsPerSource: 1 << 20} }})
	b.Cleanup(e.Close)
	a, err := e.Listen(b.Context(), "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	return a.String()
}

func roundTrips(b *testing.B, addr string, clients int) {
	var mu sync.Mutex
	var lat []time.Duration
	var lost int
	var wg sync.WaitGroup
	per := b.N/clients + 1
	b.ResetTimer()
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("udp", addr)
			if err != nil {
				b.Error(err)
				return
			}
			defer c.Close()
			msg, buf := make([]byte, 64), make([]byte, 128)
			copy(msg, "a")
			mine := make([]time.Duration, 0, per)
			for i := range per {
				binary.BigEndian.PutUint64(msg[1:], uint64(i))
				t0 := time.Now()
				if _, err := c.Write(msg); err != nil {
					b.Error(err)
					return
				}
				if !answered(c, buf, msg) {
					mu.Lock()
					lost++ // dropped: the next one goes on
					mu.Unlock()
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if len(lat) == 0 {
		b.Fatal("no answers")
	}
	slices.Sort(lat)
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "roundtrips/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(lost), "lost")
	b.ReportMetric(0, "ns/op")
}

// answered reads until the answer to msg comes (a late answer to an
// earlier one is skipped) or 100 ms pass.
func answered(c net.Conn, buf, msg []byte) bool {
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	for {
		n, err := c.Read(buf)
		if err != nil {
			return false
		}
		if bytes.Equal(buf[:n], msg) {
			return true
		}
	}
}
