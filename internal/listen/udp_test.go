package listen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// packets serves a UDP socket by echoing until ctx ends, and records how
// each loop ended.
type packets struct {
	mu    sync.Mutex
	ended map[string]error
}

func (p *packets) serve(ctx context.Context, pc net.PacketConn) error {
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()
	buf := make([]byte, 64)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			break
		}
		pc.WriteTo(buf[:n], from)
	}
	p.mu.Lock()
	p.ended[pc.LocalAddr().String()] = context.Cause(ctx)
	p.mu.Unlock()
	return nil
}

// echoes reports whether a datagram to addr comes back.
func echoes(t *testing.T, addr string) bool {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("ping"))
	buf := make([]byte, 8)
	c.SetReadDeadline(time.Now().Add(5 * time.Second)) // a lost datagram fails, never hangs
	n, err := c.Read(buf)
	return err == nil && string(buf[:n]) == "ping"
}

// udpFree reports whether addr can be bound for UDP now.
func udpFree(addr string) bool {
	pc, err := net.ListenPacket("udp", addr)
	if err == nil {
		pc.Close()
	}
	return err == nil
}

// TestPacketRebind: the UDP set rebinds as the stream set does: Prepare
// binds the new address, a busy one fails the whole Prepare and leaves the
// served set as it was, Commit stops the removed one with ErrRemoved.
func TestPacketRebind(t *testing.T) {
	p := &packets{ended: map[string]error{}}
	s := NewPacketSet(nil, p.serve, func(a string, err error) { t.Errorf("%s: %v", a, err) })
	ctx, cancel := context.WithCancel(context.Background())
	a, b := freeAddr(t), freeAddr(t)
	if err := s.Start(ctx, []string{a}); err != nil {
		t.Fatal(err)
	}
	if !echoes(t, a) {
		t.Fatalf("%s not served", a)
	}
	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if err := s.Prepare([]string{a, b, busy.LocalAddr().String()}); err == nil || !strings.Contains(err.Error(), "server.listen_udp: protoplex: listen udp") {
		t.Fatalf("Prepare with a busy address: %v", err)
	}
	if !udpFree(b) {
		t.Fatalf("%s stayed bound after the failed Prepare", b)
	}
	if err := s.Prepare([]string{b}); err != nil {
		t.Fatal(err)
	}
	if udpFree(b) {
		t.Fatalf("%s not bound by Prepare", b)
	}
	s.Commit([]string{b})
	if got := s.Addrs(); len(got) != 1 || got[0].String() != b {
		t.Fatalf("serving %v, want [%s]", got, b)
	}
	if !echoes(t, b) {
		t.Fatalf("%s not served after Commit", b)
	}
	cancel()
	s.Wait()
	if !errors.Is(p.ended[a], ErrRemoved) || errors.Is(p.ended[b], ErrRemoved) {
		t.Fatalf("causes: a %v, b %v", p.ended[a], p.ended[b])
	}
}

// TestAdopt: a socket handed to Adopt serves its address instead of a
// bind (which would fail: the address is taken, by that very socket); one
// no Start lists is closed.
func TestAdopt(t *testing.T) {
	p := &packets{ended: map[string]error{}}
	s := NewPacketSet(nil, p.serve, func(a string, err error) { t.Errorf("%s: %v", a, err) })
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); s.Wait() }()
	kept, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dropped, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	want, other := kept.LocalAddr().String(), dropped.LocalAddr().String()
	s.Adopt(want, kept)
	s.Adopt(other, dropped)
	if err := s.Start(ctx, []string{want}); err != nil {
		t.Fatal(err)
	}
	if !echoes(t, want) {
		t.Fatalf("the adopted socket %s is not served", want)
	}
	if !udpFree(other) {
		t.Fatalf("the adopted socket %s that no address lists stayed open", other)
	}
}

// TestNamed: which configured address a socket passed by socket
// activation serves.
func TestNamed(t *testing.T) {
	udp := func(s string) net.Addr { a, _ := net.ResolveUDPAddr("udp", s); return a }
	for _, tc := range []struct {
		addr  string
		local net.Addr
		want  bool
	}{
		{":443", udp("[::]:443"), true},
		{"0.0.0.0:443", udp("[::]:443"), true},
		{"[::]:443", udp("0.0.0.0:443"), true},
		{":443", udp("127.0.0.1:443"), false},
		{":443", udp("[::]:444"), false},
		{"127.0.0.1:53", udp("127.0.0.1:53"), true},
		{"127.0.0.1:53", udp("[::ffff:127.0.0.1]:53"), true},
		{"127.0.0.1:53", udp("127.0.0.2:53"), false},
		{"127.0.0.1:53", udp("0.0.0.0:53"), false},
		{"[::1]:53", udp("[::1]:53"), true},
		{"localhost:53", udp("127.0.0.1:53"), true},
		{"127.0.0.1:x", udp("127.0.0.1:53"), false},
		{"127.0.0.1:53", &net.UnixAddr{Name: "/x", Net: "unixgram"}, false},
	} {
		if got := Named([]string{tc.addr}, []net.Addr{tc.local})[0] == 0; got != tc.want {
			t.Errorf("Named(%q, %v): %v, want %v", tc.addr, tc.local, got, tc.want)
		}
	}
	// Each entry names one socket: of two sockets on the same address the
	// second takes the next entry that names it, or none.
	a, b := udp("[::]:443"), udp("127.0.0.1:53")
	got := Named([]string{"127.0.0.1:53", ":443", "0.0.0.0:443"}, []net.Addr{a, a, b, a})
	if fmt.Sprint(got) != "[1 2 0 -1]" {
		t.Errorf("Named: %v, want [1 2 0 -1]", got)
	}
}
