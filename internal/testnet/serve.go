package testnet

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Listen returns a TCP listener on an ephemeral 127.0.0.1 port, closed when
// the test ends.
func Listen(tb testing.TB) net.Listener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	return ln
}

// Serve runs handle for every connection accepted on a Listen listener and
// returns its address. See ServeOn.
func Serve(tb testing.TB, handle func(net.Conn)) string {
	tb.Helper()
	return ServeOn(tb, Listen(tb), handle)
}

// ServeOn runs handle in a goroutine of its own for every connection ln
// accepts, and closes the connection when handle returns (handle need not).
// When the test ends, ln and every open connection are closed, so that a
// handler blocked in a read or write returns, and ServeOn waits for the
// accept loop and all handlers: none outlives the test.
func ServeOn(tb testing.TB, ln net.Listener, handle func(net.Conn)) string {
	tb.Helper()
	var (
		mu     sync.Mutex
		open   = map[net.Conn]struct{}{}
		closed bool
		wg     sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				c.Close()
				return
			}
			open[c] = struct{}{}
			wg.Add(1)
			mu.Unlock()
			go func() {
				defer wg.Done()
				defer func() {
					mu.Lock()
					delete(open, c)
					mu.Unlock()
					c.Close()
				}()
				handle(c)
			}()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		closed = true
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// Start runs serve on a Listen listener until the test ends and returns the
// listener's address. See StartOn.
func Start(tb testing.TB, serve func(ctx context.Context, ln net.Listener) error) string {
	tb.Helper()
	return StartOn(tb, Listen(tb), serve)
}

// StartOn runs serve on ln until the test ends and returns ln's address.
// serve serves ln until ctx ends, as the method value pm.Serve of a
// protoplex.ProtocolManager does. When the test ends, ctx is cancelled and
// StartOn waits for serve to return; an error it returns fails the test.
func StartOn(tb testing.TB, ln net.Listener, serve func(ctx context.Context, ln net.Listener) error) string {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("serve %s: %v", ln.Addr(), err)
		}
	})
	return ln.Addr().String()
}

// Listening reports whether addr accepts a TCP connection within a second.
func Listening(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// RoundTrip dials addr, sends send, half-closes the connection and returns
// everything read until the peer closes it. Dialing is bounded at 5 s and
// the exchange at 10 s. On an error it returns what was read and the error.
func RoundTrip(addr, send string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return "", err
	}
	if _, err := io.WriteString(c, send); err != nil {
		return "", err
	}
	if err := closeWrite(c); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// closeWrite half-closes c when it can be half-closed (TCP, Unix sockets).
func closeWrite(c net.Conn) error {
	if hc, ok := c.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return nil
}
