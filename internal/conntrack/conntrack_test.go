package conntrack

import (
	"context"
	"net"
	"testing"
	"time"
)

func TestWaitAndCloseAll(t *testing.T) {
	s := New()
	if err := s.Wait(context.Background()); err != nil {
		t.Fatalf("empty set: %v", err)
	}
	client, peer := net.Pipe()
	backend, bpeer := net.Pipe()
	defer peer.Close()
	defer bpeer.Close()
	if !s.Add(client, 1) || s.Add(peer, 1) {
		t.Fatal("Add does not hold the limit")
	}
	s.Attach(client, backend)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := s.Wait(ctx); err == nil {
		t.Fatal("Wait returned with a live connection")
	}
	s.CloseAll()
	for _, c := range []net.Conn{client, backend} {
		if _, err := c.Write([]byte("x")); err == nil {
			t.Fatal("CloseAll left a conn open")
		}
	}
	done := make(chan error, 1)
	go func() { done <- s.Wait(context.Background()) }()
	s.Remove(client)
	if err := <-done; err != nil || s.Len() != 0 {
		t.Fatalf("Wait after the last Remove: %v, %d left", err, s.Len())
	}
	s.Remove(client) // twice is harmless
	if s.Len() != 0 {
		t.Fatal("double Remove miscounted")
	}
}

// TestCloseAllCancelsDial: CloseAll cancels the dial of a tracked
// connection whose backend is not attached yet, and not one attached; a
// dial started after CloseAll is cancelled at once.
func TestCloseAllCancelsDial(t *testing.T) {
	s := New()
	// dialing tracks a new connection whose backend dial is in progress.
	dialing := func() (net.Conn, context.Context) {
		c, peer := net.Pipe()
		t.Cleanup(func() { peer.Close() })
		s.Add(c, 10)
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		s.Dialing(c, cancel)
		return c, ctx
	}
	client, ctx := dialing()
	other, octx := dialing()
	backend, bpeer := net.Pipe()
	defer bpeer.Close()
	s.Attach(other, backend) // this dial returned before the drain
	s.CloseAll()
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("CloseAll left the dial in progress running")
	}
	if octx.Err() != nil {
		t.Fatal("CloseAll cancelled a dial that had returned")
	}
	s.Remove(client)
	late, lcancel := context.WithCancel(context.Background())
	s.Dialing(client, lcancel)
	if late.Err() == nil {
		t.Fatal("Dialing for a connection no longer tracked left its dial running")
	}
}
