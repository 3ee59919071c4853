package main

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// dnsQuery is a DNS query (recursion desired) for name A IN with id.
func dnsQuery(id uint16, name string) []byte {
	q := []byte{byte(id >> 8), byte(id), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}
	start := 0
	for i := 0; i <= len(name); i++ {
		if i == len(name) || name[i] == '.' {
			q = append(append(q, byte(i-start)), name[start:i]...)
			start = i + 1
		}
	}
	return append(q, 0, 0, 1, 0, 1)
}

// answered reports whether b answers the query with id: same id, the QR
// bit, no error and at least one answer.
func answered(b []byte, id uint16) bool {
	return len(b) >= 12 && uint16(b[0])<<8|uint16(b[1]) == id && b[2]&0x80 != 0 && b[3]&0x0f == 0 && (b[6] != 0 || b[7] != 0)
}

// dnsLoad runs conc closed-loop clients asking name at addr for d: each
// sends a query and waits up to timeout for its answer, then asks the
// next. With newPort every query leaves from a socket of its own (a new
// source port), as a recursive resolver's do (RFC 5452); else each client
// keeps one socket, as dnsperf's do. A query without its answer within
// timeout is lost. Every query leaves from 127.0.0.1.
func dnsLoad(addr, name string, conc int, d, timeout time.Duration, newPort bool) {
	to, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		fmt.Printf("error=%q\n", err.Error())
		return
	}
	var sent, ok, lost, errs atomic.Int64
	var id atomic.Uint32
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1500)
			var c *net.UDPConn
			defer func() {
				if c != nil {
					c.Close()
				}
			}()
			for time.Now().Before(stop) {
				if c == nil {
					if c, err = net.DialUDP("udp", nil, to); err != nil {
						errs.Add(1)
						c = nil
						time.Sleep(time.Millisecond)
						continue
					}
				}
				qid := uint16(id.Add(1))
				sent.Add(1)
				c.SetDeadline(time.Now().Add(timeout))
				if _, err := c.Write(dnsQuery(qid, name)); err != nil {
					errs.Add(1)
				}
				got := false
				for !got {
					n, err := c.Read(buf)
					if err != nil {
						break
					}
					got = answered(buf[:n], qid)
				}
				if got {
					ok.Add(1)
				} else {
					lost.Add(1)
				}
				if newPort || !got {
					// A late answer must not be taken for the next query's.
					c.Close()
					c = nil
				}
			}
		}()
	}
	start := time.Now()
	wg.Wait()
	el := time.Since(start).Seconds()
	fmt.Printf("qps=%.0f sent=%d answered=%d lost=%d errors=%d seconds=%.2f\n", float64(ok.Load())/el, sent.Load(), ok.Load(), lost.Load(), errs.Load(), el)
}

// udpIdle opens n flows through addr, each a socket that asks name once
// and keeps still after its answer, from srcs loopback addresses, and
// reports the RSS growth of pid per flow answered. Spread over srcs (at
// most 250) addresses, the flows stay under a per-source cap.
func udpIdle(addr, name string, n, srcs, pid int) {
	to, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		fmt.Printf("error=%q\n", err.Error())
		return
	}
	before := rssKiB(pid)
	conns := make([]*net.UDPConn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	held, errs := 0, 0
	buf := make([]byte, 1500)
	for i := range n {
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 1, byte(2+i%srcs))}, to)
		if err != nil {
			errs++
			continue
		}
		conns = append(conns, c)
		for try := 0; try < 5; try++ {
			c.SetDeadline(time.Now().Add(time.Second))
			c.Write(dnsQuery(uint16(i), name))
			if m, err := c.Read(buf); err == nil && answered(buf[:m], uint16(i)) {
				held++
				break
			}
		}
	}
	time.Sleep(500 * time.Millisecond) // the last flows' replies settle
	after := rssKiB(pid)
	per := "failed"
	if held == n && before > 0 && after > 0 {
		per = fmt.Sprintf("%.2f", float64(after-before)/float64(held))
	}
	fmt.Printf("held=%d errors=%d rss_before_kib=%d rss_after_kib=%d kib_per_flow=%s\n", held, errs, before, after, per)
}
