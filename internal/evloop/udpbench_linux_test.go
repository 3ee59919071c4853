//go:build linux

package evloop_test

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/udp/udptest"
	"github.com/darkit/protoplex/protocols"
)

// BenchmarkUDPRoundTripOnLoop: round trips of 1 and 32 clients (one
// datagram in flight each) to a loopback UDP echo through the engine on
// the loops: the loop's raw reads and sends (recvmmsg, write, sendmmsg),
// per datagram both ways. Each client's first datagram makes its flow,
// before the timer starts.
func BenchmarkUDPRoundTripOnLoop(b *testing.B) {
	echo := udptest.Echo(b, false)
	r := newRig(b, []*protocols.Protocol{{Name: "UECHO", Target: echo, Datagram: datagramPrefix("PING")}}, func(s *setup) { s.udp = true })
	for _, clients := range []int{1, 32} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			cs := make(chan *net.UDPConn, clients)
			for range clients {
				c := r.dialUDP()
				r.roundTripUDP(c, "PING")
				cs <- c
			}
			b.SetParallelism((clients + 1) / 2) // GOMAXPROCS 2 on the bench machine: clients goroutines
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				c := <-cs
				defer func() { cs <- c }()
				msg, buf := []byte("PING"), make([]byte, 64)
				for pb.Next() {
					if _, err := c.Write(msg); err != nil {
						b.Error(err)
						return
					}
					_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
					if _, err := c.Read(buf); err != nil {
						b.Error("no answer: ", err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "roundtrips/s")
		})
	}
}
