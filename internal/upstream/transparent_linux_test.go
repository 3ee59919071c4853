package upstream

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/darkit/protoplex/internal/testnet"
)

// peerThrough dials ln through a transparent set for client (nil: as a
// health probe does) and returns the peer address ln's end sees. Without
// the capability the test is skipped, after checking the error names it.
func peerThrough(t *testing.T, ln net.Listener, client net.Addr) netip.Addr {
	t.Helper()
	s, err := New([]Target{{Addr: ln.Addr().String(), Weight: 1}}, Options{Transparent: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.dial(context.Background(), s.targets[0], client)
	if errors.Is(err, syscall.EPERM) {
		if !strings.Contains(err.Error(), "CAP_NET_ADMIN") {
			t.Fatalf("EPERM without the capability named: %v", err)
		}
		t.Skip("no CAP_NET_ADMIN:", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	return sc.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
}

// TestDialTransparent: the backend sees the client's IP as the peer (on
// loopback every 127/8 address is local, so the reply needs no routing
// rule). A nil client (health probes) dials from this host's address.
func TestDialTransparent(t *testing.T) {
	ln := testnet.Listen(t)
	if peer := peerThrough(t, ln, &net.TCPAddr{IP: net.ParseIP("127.0.0.5"), Port: 40000}); peer != netip.MustParseAddr("127.0.0.5") {
		t.Fatalf("backend sees %v, want 127.0.0.5", peer)
	}
	if peer := peerThrough(t, ln, nil); peer != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("a probe dials from %v, want 127.0.0.1", peer)
	}
}

// TestDialTransparentIPv6: IPV6_TRANSPARENT on a v6 socket; ::1 is the
// one loopback address IPv6 has, so the client is ::1 itself.
func TestDialTransparentIPv6(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback:", err)
	}
	defer ln.Close()
	if peer := peerThrough(t, ln, &net.TCPAddr{IP: net.IPv6loopback, Port: 40000}); peer != netip.IPv6Loopback() {
		t.Fatalf("backend sees %v, want ::1", peer)
	}
}

func TestTransparentRefused(t *testing.T) {
	tg := []Target{{Addr: "127.0.0.1:80", Weight: 1}}
	for _, opt := range []Options{
		{Transparent: true, Source: []netip.Addr{netip.MustParseAddr("127.0.0.2")}},
		{Transparent: true, Pool: Pool{MinIdle: 1}},
	} {
		if _, err := New(tg, opt); err == nil {
			t.Errorf("%+v accepted", opt)
		}
	}
	s, err := New([]Target{{Addr: "[::1]:80", Weight: 1}}, Options{Transparent: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.dial(context.Background(), s.targets[0], &net.TCPAddr{IP: net.ParseIP("127.0.0.5"), Port: 1}); err == nil || !strings.Contains(err.Error(), "address families") {
		t.Fatalf("v4 client to a v6 target: %v", err)
	}
	if _, err := s.dial(context.Background(), s.targets[0], &net.UnixAddr{Name: "/x", Net: "unix"}); err == nil {
		t.Fatal("a Unix-socket client dialed transparently")
	}
}
