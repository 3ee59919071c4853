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

// TestListAndCloseByID: each connection gets an id never reused; List
// returns the oldest first, bounded; Close(id) closes that one connection
// and its backend, leaving the others.
func TestListAndCloseByID(t *testing.T) {
	s := New()
	var conns []net.Conn
	for range 4 {
		c, peer := net.Pipe()
		defer peer.Close()
		if !s.Add(c, 10) {
			t.Fatal("Add refused under the limit")
		}
		conns = append(conns, c)
	}
	backend, bpeer := net.Pipe()
	defer bpeer.Close()
	s.Attach(conns[1], backend)
	l := s.List(2)
	if len(l) != 2 || l[0].ID != 1 || l[1].ID != 2 || l[0].Client == nil {
		t.Fatalf("List(2) = %+v", l)
	}
	if !s.Close(2) || s.Close(99) {
		t.Fatal("Close by id")
	}
	for _, c := range []net.Conn{conns[1], backend} {
		if _, err := c.Write([]byte("x")); err == nil {
			t.Fatal("Close(id) left the connection or its backend open")
		}
	}
	s.Remove(conns[1])
	if s.Close(2) {
		t.Fatal("Close of a removed id")
	}
	c, peer := net.Pipe()
	defer peer.Close()
	s.Add(c, 10)
	l = s.List(10)
	if len(l) != 4 || l[3].ID != 5 || l[1].ID != 3 {
		t.Fatalf("List after a remove and an add = %+v", l)
	}
	if err := conns[0].SetDeadline(time.Now().Add(time.Hour)); err != nil {
		t.Fatalf("Close(2) closed connection 1 too: %v", err)
	}
}
