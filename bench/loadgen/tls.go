package main

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// captureConn keeps what a TLS client writes first and fails there.
type captureConn struct {
	net.Conn
	out []byte
}

func (c *captureConn) Write(p []byte) (int, error) {
	c.out = append(c.out, p...)
	return 0, errors.New("captured")
}

// clientHello is the ClientHello Go's TLS client sends for sni (one TLS
// record), with the offsets of its random and session ID: each connection
// sends it with its own, as clients do, so that nothing keyed on the
// exact bytes (the identification cache) can serve it.
func clientHello(sni string) (hello []byte, random, session int, err error) {
	c := &captureConn{}
	_ = tls.Client(c, &tls.Config{ServerName: sni, NextProtos: []string{"h2", "http/1.1"}}).Handshake()
	h := c.out
	// record header 5, handshake header 4, version 2, random 32, session ID
	// length 1 and bytes.
	if len(h) < 5+4+2+32+1 || h[0] != 22 || h[5] != 1 || int(binary.BigEndian.Uint16(h[3:5]))+5 != len(h) {
		return nil, 0, 0, fmt.Errorf("unexpected ClientHello (%d bytes)", len(h))
	}
	random = 5 + 4 + 2
	session = random + 32 + 1
	if int(h[random+32]) != 32 {
		return nil, 0, 0, fmt.Errorf("session ID of %d bytes", h[random+32])
	}
	return h, random, session, nil
}

// tlsCPS is the closed loop of cps with TLS ClientHellos: connect, send a
// hello with a fresh random and session ID, read the reply to EOF, close.
// With pid > 0 it also reports the CPU time that process (the proxy) spent
// per connection, a figure less moved than the rate by other work on a
// shared machine.
func tlsCPS(addr, sni string, conc int, d time.Duration, pid int) {
	hello, random, session, err := clientHello(sni)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	deadline := time.Now().Add(d)
	var okN, errN atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	cpu0 := 0.0
	if pid > 0 {
		cpu0 = cpuTicks(pid)
	}
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(time.Now().UnixNano())))
			msg := append([]byte(nil), hello...)
			buf := make([]byte, 256)
			for time.Now().Before(deadline) {
				for i := random; i < random+32; i += 8 {
					binary.LittleEndian.PutUint64(msg[i:], rng.Uint64())
				}
				for i := session; i < session+32; i += 8 {
					binary.LittleEndian.PutUint64(msg[i:], rng.Uint64())
				}
				if err := tlsOnce(addr, msg, buf); err != nil {
					errN.Add(1)
					first.CompareAndSwap(nil, err.Error())
					continue
				}
				okN.Add(1)
			}
		}(uint64(w))
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	firstErr, _ := first.Load().(string)
	if pid > 0 && okN.Load() > 0 {
		fmt.Printf("cpu_us_per_conn=%.1f ", (cpuTicks(pid)-cpu0)*1e6/float64(okN.Load()))
	}
	fmt.Printf("cps=%.0f ok=%d errors=%d seconds=%.2f first_error=%q\n", float64(okN.Load())/el, okN.Load(), errN.Load(), el, firstErr)
}

func tlsOnce(addr string, hello, buf []byte) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(hello); err != nil {
		return err
	}
	got := 0
	for {
		m, err := c.Read(buf)
		got += m
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if got == 0 {
		return errors.New("empty reply")
	}
	return nil
}
