package main

import (
	"bufio"
	"net"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

// holdServer answers "GET /hold" with a reply head and keeps the
// connection until the client closes it; every other request, and every
// connection past the first routed ones, is closed unanswered. It returns
// its address and a function that stops it and waits for its goroutines.
func holdServer(t *testing.T, routed int) (string, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func(c net.Conn, answer bool) {
				defer wg.Done()
				defer c.Close()
				r := bufio.NewReader(c)
				if line, err := r.ReadString('\n'); err != nil || line != "GET /hold HTTP/1.1\r\n" || !answer {
					return
				}
				c.Write([]byte("HTTP/1.1 200 OK\r\n\r\n"))
				r.WriteTo(discard{}) // until the client closes
			}(c, i < routed)
		}
	}()
	return ln.Addr().String(), func() { ln.Close(); wg.Wait() }
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func TestHoldConns(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, tc := range []struct {
		name         string
		n, routed    int
		wantHeld     int
		wantOpenedOK int
	}{
		{"all routed", 50, 50, 50, 50},
		{"some refused", 50, 30, 30, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, stop := holdServer(t, tc.routed)
			defer stop()
			conns, held, errs := holdConns(addr, tc.n)
			defer closeAll(conns)
			if held != tc.wantHeld || errs != 0 || len(conns) != tc.wantOpenedOK {
				t.Fatalf("held %d, errors %d, opened %d; want %d, 0, %d", held, errs, len(conns), tc.wantHeld, tc.wantOpenedOK)
			}
		})
	}
}

func TestHoldConnsDialErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there any more: every dial is refused
	conns, held, errs := holdConns(addr, 3)
	closeAll(conns)
	if held != 0 || errs != 3 || len(conns) != 0 {
		t.Fatalf("held %d, errors %d, opened %d; want 0, 3, 0", held, errs, len(conns))
	}
}
