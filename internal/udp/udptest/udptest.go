// Package udptest has UDP servers for tests: an echo that can tag each
// answer with what it received first from that client, so a test tells
// apart the answers of many flows.
package udptest

import (
	"encoding/binary"
	"errors"
	"net"
	"strings"
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

// DNS is a DNS message with ID id and one question for name (type A,
// class IN); a reply (QR set) carries one answer record after it.
func DNS(id uint16, name string, reply bool) []byte {
	b := binary.BigEndian.AppendUint16(nil, id)
	flags, an := uint16(0x0100), uint16(0)
	if reply {
		flags, an = 0x8180, 1
	}
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, 1)
	b = binary.BigEndian.AppendUint16(b, an)
	b = append(b, 0, 0, 0, 0)
	for _, l := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	b = append(b, 0, 0, 1, 0, 1)
	if reply {
		b = append(b, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7)
	}
	return b
}
