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

// TestCloseAllCancelsDial: CloseAll cancels the dial context of a tracked
// connection; a dial that returned, or one started after CloseAll, is not
// left with a live context it should not have.
func TestCloseAllCancelsDial(t *testing.T) {
	s := New()
	client, peer := net.Pipe()
	defer peer.Close()
	s.Add(client, 10)
	ctx, done := s.Dialing(context.Background(), client)
	other, opeer := net.Pipe()
	defer opeer.Close()
	s.Add(other, 10)
	octx, odone := s.Dialing(context.Background(), other)
	odone() // this dial returned before the drain
	if octx.Err() == nil {
		t.Fatal("the cancel function Dialing returned did not cancel")
	}
	if ctx.Err() != nil {
		t.Fatal("a dial context cancelled before CloseAll")
	}
	s.CloseAll()
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("CloseAll left the dial in progress running")
	}
	done()
	s.Remove(client)
	if ctx, _ := s.Dialing(context.Background(), client); ctx.Err() == nil {
		t.Fatal("Dialing for a connection no longer tracked returned a live context")
	}
}
