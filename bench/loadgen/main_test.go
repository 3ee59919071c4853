package main

import (
	"bufio"
	"io"
	"net"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
	"go.uber.org/goleak"
)

// holdServer answers "GET /hold" on its first routed connections with a
// reply head and keeps each until the client closes it, echoing what
// follows, as bench/backend does; every other connection is closed
// unanswered. It stops with the test.
func holdServer(t *testing.T, routed int) string {
	var n atomic.Int64
	return testnet.Serve(t, func(c net.Conn) {
		answer := n.Add(1) <= int64(routed)
		r := bufio.NewReader(c)
		if line, err := r.ReadString('\n'); err != nil || line != "GET /hold HTTP/1.1\r\n" || !answer {
			return
		}
		for { // the rest of the head, as bench/backend reads it
			if l, err := r.ReadString('\n'); err != nil || l == "\r\n" {
				break
			}
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n")
		io.Copy(c, r) // until the client closes
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

// TestAlive: a held connection counts while it answers; one the far side
// closed does not.
func TestAlive(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })       // after the server stops
	conns, held, _ := holdConns(holdServer(t, 3), 5) // the last 2 are closed unanswered
	defer closeAll(conns)
	if n := alive(conns); held != 3 || n != 3 {
		t.Fatalf("held %d, %d answer; want 3, 3", held, n)
	}
}

// TestLatencyStops: a value on stop ends the open loop long before d, and
// the line describes the connections started, not the ones planned.
func TestLatencyStops(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })  // after the server stops
	addr := testnet.Serve(t, func(c net.Conn) { // bench/backend's /hold and its "ok"
		r := bufio.NewReader(c)
		if line, _ := r.ReadString('\n'); line == "GET /hold HTTP/1.1\r\n" {
			for { // the rest of the head, as bench/backend reads it
				if l, err := r.ReadString('\n'); err != nil || l == "\r\n" {
					break
				}
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\n")
			io.Copy(c, r)
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\nok")
	})
	stop := make(chan os.Signal, 1)
	var out strings.Builder
	done := make(chan struct{})
	go func() { latency(&out, addr, 200, time.Hour, 2, stop); close(done) }()
	time.Sleep(100 * time.Millisecond) // some starts first: not synchronisation
	stop <- os.Interrupt
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the load did not stop")
	}
	m := regexp.MustCompile(`held=2 .*held_alive=2 started=(\d+) .* n=(\d+) errors=0 `).FindStringSubmatch(out.String())
	if m == nil || m[1] != m[2] || m[1] == "0" {
		t.Fatalf("line %q: want 2 held and answering, every connection started answered, none planned but not started counted", out.String())
	}
}
