package listen

import (
	"context"
	"errors"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
)

// fileOf is a duplicate of ln's socket as a file, as an upgrade receives
// it.
func fileOf(t *testing.T, c interface{ File() (*os.File, error) }) *os.File {
	t.Helper()
	f, err := c.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestInherit: a set given sockets by key serves them instead of binding
// their addresses (the address as configured: port 0 stays the port the
// old process had), binds the others, and leaves the keys nobody asked
// for; a socket that is not a stream listener fails the start with the
// address named.
func TestInherit(t *testing.T) {
	old, err := TCP(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	in := NewInherited(map[string]*os.File{
		Key(RoleListen, "127.0.0.1:0"):     fileOf(t, old.(*net.TCPListener)),
		Key(RoleListen, "127.0.0.1:1"):     fileOf(t, old.(*net.TCPListener)), // no longer configured
		Key(RoleListenUDP, "127.0.0.1:0"):  fileOf(t, udp.(*net.UDPConn)),
		Key(RoleMetrics, "127.0.0.1:9091"): fileOf(t, old.(*net.TCPListener)),
	})
	r := &recorder{ended: map[string]error{}}
	s := NewSet(r.serve, func(a string, err error) { t.Errorf("%s: %v", a, err) })
	s.Inherit(in)
	ctx, cancel := context.WithCancel(context.Background())
	fresh := freeAddr(t)
	if err := s.Start(ctx, []string{"127.0.0.1:0", fresh}); err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, a := range s.Addrs() {
		addrs = append(addrs, a.String())
	}
	if want := []string{old.Addr().String(), fresh}; !slices.Equal(addrs, want) {
		t.Errorf("serving %v, want the inherited %v", addrs, want)
	}
	pc, ok, err := in.PacketConn(RoleListenUDP, "127.0.0.1:0")
	if !ok || err != nil || pc.LocalAddr().String() != udp.LocalAddr().String() {
		t.Errorf("the UDP socket: %v, %v, %v", pc, ok, err)
	}
	if pc != nil {
		pc.Close()
	}
	if _, ok, _ := in.PacketConn(RoleListenUDP, "127.0.0.1:0"); ok {
		t.Error("a socket was taken twice")
	}
	if left := in.Left(); !slices.Equal(left, []string{Key(RoleListen, "127.0.0.1:1"), Key(RoleMetrics, "127.0.0.1:9091")}) {
		t.Errorf("left %v", left)
	}
	cancel()
	s.Wait()

	// A UDP socket handed over where a stream listener is configured.
	udp2 := fileOf(t, udp.(*net.UDPConn))
	s2 := NewSet(r.serve, func(string, error) {})
	s2.Inherit(NewInherited(map[string]*os.File{Key(RoleListen, "127.0.0.1:0"): udp2}))
	err = s2.Start(context.Background(), []string{"127.0.0.1:0"})
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:0: the socket handed over") {
		t.Errorf("a UDP socket as a listener: %v", err)
	}
	var nilIn *Inherited
	if _, ok, err := nilIn.Listener(RoleListen, "x"); ok || err != nil || nilIn.Left() != nil {
		t.Error("a nil Inherited has sockets")
	}
}

// TestInheritClosesTaken: a file taken is closed once the listener made of
// it holds its own duplicate, and leaves the caller's map, so no
// descriptor waits for a finalizer.
func TestInheritClosesTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	lf, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	pf, err := pc.(*net.UDPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]*os.File{Key(RoleListen, "a"): lf, Key(RoleListenUDP, "b"): pf}
	in := NewInherited(files)
	got, ok, err := in.Listener(RoleListen, "a")
	if !ok || err != nil {
		t.Fatalf("Listener: %v %v", ok, err)
	}
	defer got.Close()
	gotPC, ok, err := in.PacketConn(RoleListenUDP, "b")
	if !ok || err != nil {
		t.Fatalf("PacketConn: %v %v", ok, err)
	}
	defer gotPC.Close()
	if len(files) != 0 {
		t.Errorf("taken files are still in the caller's map: %v", files)
	}
	for name, f := range map[string]*os.File{"listener": lf, "packet": pf} {
		if err := f.Close(); !errors.Is(err, os.ErrClosed) {
			t.Errorf("the %s file taken is still open (Close: %v)", name, err)
		}
	}
}
