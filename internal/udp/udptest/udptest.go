// Package udptest has UDP servers for tests: an echo that can tag each
// answer with what it received first from that client, so a test tells
// apart the answers of many flows.
package udptest

import (
	"errors"
	"net"
	"sync"
	"testing"
)

// Echo starts a UDP server on 127.0.0.1 answering each datagram with
// itself, and returns its address; it stops with the test. With tagged,
// each answer is prefixed by the first datagram that client address sent
// and a "|".
func Echo(tb testing.TB, tagged bool) string {
	tb.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 64<<10)
		first := map[string][]byte{}
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			out := buf[:n]
			if tagged {
				key := from.String()
				tag, ok := first[key]
				if !ok {
					tag = append([]byte(nil), out...)
					first[key] = tag
				}
				out = append(append(append([]byte(nil), tag...), '|'), out...)
			}
			_, _ = c.WriteToUDPAddrPort(out, from)
		}
	}()
	tb.Cleanup(func() { c.Close(); wg.Wait() })
	return c.LocalAddr().String()
}
