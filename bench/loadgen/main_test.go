package main

import (
	"bufio"
	"io"
	"net"
	"sync/atomic"
	"testing"

	"github.com/darkit/protoplex/internal/testnet"
	"go.uber.org/goleak"
)

// holdServer answers "GET /hold" on its first routed connections with a
// reply head and keeps each until the client closes it; every other
// connection is closed unanswered. It stops with the test.
func holdServer(t *testing.T, routed int) string {
	var n atomic.Int64
	return testnet.Serve(t, func(c net.Conn) {
		answer := n.Add(1) <= int64(routed)
		r := bufio.NewReader(c)
		if line, err := r.ReadString('\n'); err != nil || line != "GET /hold HTTP/1.1\r\n" || !answer {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\n")
		io.Copy(io.Discard, r) // until the client closes
	})
}

func TestHoldConns(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, tc := range []struct {
		name             string
		n, routed        int
		wantHeld, opened int
	}{
		{"all routed", 50, 50, 50, 50},
		{"some refused", 50, 30, 30, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conns, held, errs := holdConns(holdServer(t, tc.routed), tc.n)
			defer closeAll(conns)
			if held != tc.wantHeld || errs != 0 || len(conns) != tc.opened {
				t.Fatalf("held %d, errors %d, opened %d; want %d, 0, %d", held, errs, len(conns), tc.wantHeld, tc.opened)
			}
		})
	}
}

func TestHoldConnsDialErrors(t *testing.T) {
	conns, held, errs := holdConns(testnet.FreeAddr(t), 3) // nothing listens there
	closeAll(conns)
	if held != 0 || errs != 3 || len(conns) != 0 {
		t.Fatalf("held %d, errors %d, opened %d; want 0, 3, 0", held, errs, len(conns))
	}
}
