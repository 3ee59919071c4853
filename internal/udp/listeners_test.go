package udp

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// free reports whether addr can be bound for UDP without SO_REUSEPORT.
func free(addr string) bool {
	pc, err := net.ListenPacket("udp", addr)
	if err == nil {
		pc.Close()
	}
	return err == nil
}

// TestBindSocketsServe: BindSockets binds all of an address's sockets
// before any is read; Serve runs one listener per socket until its
// context ends, then every socket is closed. A socket not bound by
// BindSockets (socket activation: no SO_REUSEPORT) is served alone.
func TestBindSocketsServe(t *testing.T) {
	e := New(Options{Log: slog.New(slog.DiscardHandler), Sockets: 3})
	defer e.Close()
	pc, err := e.BindSockets(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	socks := Sockets(pc)
	first, ok := socks[0].(*net.UDPConn)
	if !ok || first.LocalAddr().String() != addr {
		t.Fatalf("Sockets: %T %v first, want the *net.UDPConn on %s", socks[0], socks[0].LocalAddr(), addr)
	}
	want := 3
	if !reusePortOK {
		want = 1
	}
	if n := len(socks); n != want || n != 1+len(pc.(*sockets).others) {
		t.Fatalf("%d sockets bound, want %d", n, want)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Serve(ctx, pc) }()
	testnet.Eventually(t, 10*time.Second, func() bool { return len(e.Addrs()) == 1 }, "Serve never listed its address")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !free(addr) {
		t.Fatalf("%s still bound after Serve returned", addr)
	}

	// A plain socket: the others cannot join it; it serves alone.
	plain, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	go func() { done <- e.Serve(ctx, plain) }()
	testnet.Eventually(t, 10*time.Second, func() bool { return len(e.Addrs()) == 1 }, "Serve never listed the plain socket")
	e.mu.Lock()
	n := len(e.lns)
	e.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d listeners on a socket without SO_REUSEPORT, want 1", n)
	}
	cancel()
	<-done

	// Closing what BindSockets returned (a rejected reload) frees the port.
	pc, err = e.BindSockets(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = pc.LocalAddr().String()
	pc.Close()
	if !free(addr) {
		t.Fatalf("%s still bound after Close", addr)
	}
}

// TestEngineSockets: what an upgrade hands over for an address is every
// socket the engine serves it with, in order: those BindSockets bound,
// and for one socket served alone (socket activation, with SO_REUSEPORT)
// the sockets Serve joined beside it.
func TestEngineSockets(t *testing.T) {
	if !reusePortOK {
		t.Skip("no SO_REUSEPORT here: an address has one socket")
	}
	e := New(Options{Log: slog.New(slog.DiscardHandler), Sockets: 3})
	defer e.Close()
	pc, err := e.BindSockets(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if got := e.Sockets(pc); len(got) != 3 || got[0] != Sockets(pc)[0] {
		t.Fatalf("BindSockets's: %d sockets, want 3, the first first", len(got))
	}
	pc.Close()
	alone, err := Bind(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Serve(ctx, alone) }()
	testnet.Eventually(t, 10*time.Second, func() bool { return len(e.Sockets(alone)) == 3 }, "the sockets joined beside one served alone are not listed")
	if got := e.Sockets(alone); got[0] != alone {
		t.Errorf("the first socket is %v, want the one served", got[0].LocalAddr())
	}
	cancel()
	<-done
}
