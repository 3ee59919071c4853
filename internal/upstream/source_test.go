package upstream

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

func TestParseSource(t *testing.T) {
	a := netip.MustParseAddr
	cases := []struct {
		in   []string
		want []netip.Addr // nil with ok=false: an error
		ok   bool
	}{
		{nil, nil, true},
		{[]string{"127.0.0.2"}, []netip.Addr{a("127.0.0.2")}, true},
		{[]string{" 127.0.0.2 - 127.0.0.4 "}, []netip.Addr{a("127.0.0.2"), a("127.0.0.3"), a("127.0.0.4")}, true},
		{[]string{"127.0.0.9", "127.0.0.2-127.0.0.2"}, []netip.Addr{a("127.0.0.9"), a("127.0.0.2")}, true},
		{[]string{"::ffff:10.0.0.1"}, []netip.Addr{a("10.0.0.1")}, true},
		{[]string{"fd00::1-fd00::3"}, []netip.Addr{a("fd00::1"), a("fd00::2"), a("fd00::3")}, true},
		{[]string{"10.0.0.255-10.0.1.1"}, []netip.Addr{a("10.0.0.255"), a("10.0.1.0"), a("10.0.1.1")}, true},
		{[]string{""}, nil, false},
		{[]string{"localhost"}, nil, false},
		{[]string{"127.0.0.1:80"}, nil, false},
		{[]string{"10.0.0.0/24"}, nil, false},
		{[]string{"127.0.0.4-127.0.0.2"}, nil, false}, // reversed
		{[]string{"127.0.0.2-::1"}, nil, false},       // mixed in a range
		{[]string{"127.0.0.2", "::1"}, nil, false},    // mixed across entries
		{[]string{"127.0.0.2", "127.0.0.1-127.0.0.3"}, nil, false},
		{[]string{"0.0.0.0"}, nil, false},
		{[]string{"::"}, nil, false},
		{[]string{"224.0.0.1"}, nil, false},
		{[]string{"255.255.255.255"}, nil, false},
		{[]string{"fe80::1%eth0"}, nil, false},
		{[]string{"127.0.0.1-"}, nil, false},
		{[]string{"-127.0.0.1"}, nil, false},
		{[]string{"10.0.0.0-10.0.4.0"}, nil, false}, // 1,025 addresses
		{[]string{"10.0.0.0-10.0.3.255", "10.0.9.9"}, nil, false},
		{[]string{"10.0.0.0-255.255.255.254"}, nil, false},
		{[]string{"::1-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}, nil, false},
	}
	for _, tc := range cases {
		got, err := ParseSource(tc.in)
		if (err == nil) != tc.ok || !slices.Equal(got, tc.want) {
			t.Errorf("ParseSource(%q) = %v, %v; want %v ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
	full, err := ParseSource([]string{"10.0.0.0-10.0.3.255"})
	if err != nil || len(full) != MaxSourceAddrs {
		t.Fatalf("a range of exactly %d: %d, %v", MaxSourceAddrs, len(full), err)
	}
}

// FuzzParseSource: any input either fails or yields at most MaxSourceAddrs
// distinct unicast addresses of one family.
func FuzzParseSource(f *testing.F) {
	for _, s := range []string{"127.0.0.2", "127.0.0.2-127.0.0.20", "fd00::1-fd00::ff", "1.2.3.4,5.6.7.8", "0.0.0.0-255.255.255.255", "::ffff:1.2.3.4-::ffff:1.2.3.9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := ParseSource(strings.Split(in, ","))
		if err != nil {
			return
		}
		if len(got) > MaxSourceAddrs {
			t.Fatalf("%d addresses", len(got))
		}
		seen := map[netip.Addr]bool{}
		for _, a := range got {
			if !a.IsValid() || a.Is4() != got[0].Is4() || a.Is4In6() || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() || seen[a] {
				t.Fatalf("%q → bad address %v in %v", in, a, got)
			}
			seen[a] = true
		}
		if checkSource(got) != nil {
			t.Fatalf("%q → %v refused by New", in, got)
		}
	})
}

// TestDialFromSourceAddresses: the dials take each configured source in
// turn, and the backend sees every connection from the address and port the
// dialer bound.
func TestDialFromSourceAddresses(t *testing.T) {
	accepted := make(chan string, 8)
	backend := testnet.Serve(t, func(c net.Conn) {
		select {
		case accepted <- c.RemoteAddr().String():
		default:
		}
	})
	src, err := ParseSource([]string{"127.0.0.2-127.0.0.3"})
	if err != nil {
		t.Fatal(err)
	}
	host := "localhost:" + strings.Split(backend, ":")[1] // resolved per dial
	var dialed []string
	for _, addr := range []string{backend, host} {
		s, err := New([]Target{{Addr: addr, Weight: 1}}, Options{Source: src})
		if err != nil {
			t.Fatal(err)
		}
		var local []string
		for i := 0; i < 4; i++ {
			c, _, release, err := s.Dial(context.Background(), nil, nil)
			if err != nil {
				t.Fatalf("%s: %v", addr, err)
			}
			local = append(local, c.LocalAddr().(*net.TCPAddr).IP.String())
			dialed = append(dialed, c.LocalAddr().String())
			c.Close()
			release()
		}
		if want := []string{"127.0.0.2", "127.0.0.3", "127.0.0.2", "127.0.0.3"}; !slices.Equal(local, want) {
			t.Fatalf("%s: dialed from %v, want %v", addr, local, want)
		}
	}
	// Every dial above completed its handshake; wait for the backend to
	// have accepted each (closing the listener at the end of the test first
	// would drop the last).
	var from []string
	timeout := time.After(10 * time.Second)
	for len(from) < 8 {
		select {
		case ip := <-accepted:
			from = append(from, ip)
		case <-timeout:
			t.Fatalf("backend accepted %d connections, want 8", len(from))
		}
	}
	slices.Sort(from)
	slices.Sort(dialed)
	if !slices.Equal(from, dialed) {
		t.Fatalf("backend saw connections from %v, the dials were from %v", from, dialed)
	}
}
