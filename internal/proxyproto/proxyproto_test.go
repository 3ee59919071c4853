package proxyproto

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

var (
	src4 = netip.MustParseAddrPort("192.0.2.1:4000")
	dst4 = netip.MustParseAddrPort("198.51.100.2:443")
	src6 = netip.MustParseAddrPort("[2001:db8::1]:4000")
	dst6 = netip.MustParseAddrPort("[2001:db8::2]:443")
)

// v2 builds a v2 header from its fixed bytes and body (addresses, TLVs).
func v2(verCmd, fam byte, body ...[]byte) []byte {
	b := bytes.Join(body, nil)
	return append(append([]byte(v2Sig), verCmd, fam, byte(len(b)>>8), byte(len(b))), b...)
}

func TestParse(t *testing.T) {
	addr4 := []byte{192, 0, 2, 1, 198, 51, 100, 2, 0x0f, 0xa0, 0x01, 0xbb}
	addr6 := append(append(append([]byte(nil), src6.Addr().AsSlice()...), dst6.Addr().AsSlice()...), 0x0f, 0xa0, 0x01, 0xbb)
	mapped := netip.AddrFrom16(src4.Addr().As16()).AsSlice()
	addrMapped := append(append(append([]byte(nil), mapped...), netip.AddrFrom16(dst4.Addr().As16()).AsSlice()...), 0x0f, 0xa0, 0x01, 0xbb)
	tlv := []byte{0x04, 0x00, 0x02, 'h', 'i'} // PP2_TYPE_NOOP
	longest := "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
	for _, tc := range []struct {
		name string
		in   []byte
		want Header
		n    int
		err  error
	}{
		{"v1 tcp4", []byte("PROXY TCP4 192.0.2.1 198.51.100.2 4000 443\r\nGET /"), Header{Source: src4, Dest: dst4}, 44, nil},
		{"v1 tcp6", []byte("PROXY TCP6 2001:db8::1 2001:db8::2 4000 443\r\n"), Header{Source: src6, Dest: dst6}, 45, nil},
		{"v1 tcp6 mapped", []byte("PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 4000 443\r\n"), Header{Source: src4, Dest: dst6}, 50, nil},
		{"v1 unknown", []byte("PROXY UNKNOWN\r\n"), Header{Local: true}, 15, nil},
		{"v1 unknown with addresses", []byte("PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\nx"), Header{Local: true}, 35, nil},
		{"v1 longest", []byte(longest + "rest"), Header{Local: true}, MaxV1Len, nil},
		{"v1 empty", nil, Header{}, 0, ErrIncomplete},
		{"v1 signature prefix", []byte("PRO"), Header{}, 0, ErrIncomplete},
		{"v1 no CRLF yet", []byte("PROXY TCP4 192.0.2.1 198.51.100.2 4000 443\r"), Header{}, 0, ErrIncomplete},
		{"http", []byte("GET / HTTP/1.1\r\n"), Header{}, 0, ErrNotProxy},
		{"lower case", []byte("proxy TCP4"), Header{}, 0, ErrNotProxy},
		{"v1 over 107 bytes", []byte("PROXY TCP4 192.0.2.1" + strings.Repeat(" ", 100)), Header{}, 0, ErrInvalid},
		{"v1 unknown over 107 bytes", []byte("PROXY UNKNOWN" + strings.Repeat(" ", 120) + "\r\n"), Header{}, 0, ErrInvalid},
		{"v1 family", []byte("PROXY UDP4 192.0.2.1 198.51.100.2 4000 443\r\n"), Header{}, 0, ErrInvalid},
		{"v1 fields", []byte("PROXY TCP4 192.0.2.1 198.51.100.2 4000\r\n"), Header{}, 0, ErrInvalid},
		{"v1 port", []byte("PROXY TCP4 192.0.2.1 198.51.100.2 4000 65536\r\n"), Header{}, 0, ErrInvalid},
		{"v1 address", []byte("PROXY TCP4 192.0.2 198.51.100.2 4000 443\r\n"), Header{}, 0, ErrInvalid},
		{"v1 tcp4 with v6", []byte("PROXY TCP4 2001:db8::1 198.51.100.2 4000 443\r\n"), Header{}, 0, ErrInvalid},
		{"v1 tcp6 with v4 dest", []byte("PROXY TCP6 2001:db8::1 198.51.100.2 4000 443\r\n"), Header{}, 0, ErrInvalid},
		{"v1 zone", []byte("PROXY TCP6 fe80::1%eth0 2001:db8::2 4000 443\r\n"), Header{}, 0, ErrInvalid},
		{"v2 tcp4", v2(0x21, 0x11, addr4), Header{Source: src4, Dest: dst4}, 28, nil},
		{"v2 tcp4 with TLV", append(v2(0x21, 0x11, addr4, tlv), "SSH-2.0-x"...), Header{Source: src4, Dest: dst4}, 33, nil},
		{"v2 tcp6", v2(0x21, 0x21, addr6), Header{Source: src6, Dest: dst6}, 52, nil},
		{"v2 tcp6 mapped", v2(0x21, 0x21, addrMapped), Header{Source: src4, Dest: dst4}, 52, nil},
		{"v2 udp4", v2(0x21, 0x12, addr4), Header{Source: src4, Dest: dst4}, 28, nil},
		{"v2 local", v2(0x20, 0x00), Header{Local: true}, 16, nil},
		{"v2 local with TLV and addresses", v2(0x20, 0x11, addr4, tlv), Header{Local: true}, 33, nil},
		{"v2 unspec", v2(0x21, 0x00, tlv), Header{Local: true}, 21, nil},
		{"v2 unix", v2(0x21, 0x31, make([]byte, 216)), Header{Local: true}, 232, nil},
		{"v2 signature prefix", []byte(v2Sig[:5]), Header{}, 0, ErrIncomplete},
		{"v2 fixed part", v2(0x21, 0x11, addr4)[:15], Header{}, 0, ErrIncomplete},
		{"v2 addresses", v2(0x21, 0x11, addr4)[:27], Header{}, 0, ErrIncomplete},
		{"v2 bad signature", []byte("\r\n\r\n\x00\r\nQUIX\n"), Header{}, 0, ErrNotProxy},
		{"v2 version 1", v2(0x11, 0x11, addr4), Header{}, 0, ErrInvalid},
		{"v2 command 2", v2(0x22, 0x11, addr4)[:13], Header{}, 0, ErrInvalid},
		{"v2 family 4", v2(0x21, 0x41, addr4)[:14], Header{}, 0, ErrInvalid},
		{"v2 transport 3", v2(0x21, 0x13, addr4)[:14], Header{}, 0, ErrInvalid},
		{"v2 too short for tcp4", v2(0x21, 0x11, addr4[:11]), Header{}, 0, ErrInvalid},
		{"v2 too short for tcp6", v2(0x21, 0x21, addr6[:35])[:16], Header{}, 0, ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, n, err := Parse(tc.in)
			if h != tc.want || n != tc.n || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Fatalf("Parse(%q) = %+v, %d, %v; want %+v, %d, %v", tc.in, h, n, err, tc.want, tc.n, tc.err)
			}
			checkSplits(t, tc.in)
		})
	}
}

// checkSplits: every prefix of b answers ErrIncomplete or what b answers,
// and once a prefix decides, every longer one answers the same.
func checkSplits(t *testing.T, b []byte) {
	t.Helper()
	h, n, err := Parse(b)
	decided := false
	for k := 0; k <= len(b); k++ {
		hk, nk, errk := Parse(b[:k])
		if errors.Is(errk, ErrIncomplete) {
			if decided {
				t.Fatalf("prefix %d is incomplete after a shorter one decided", k)
			}
			continue
		}
		decided = true
		if hk != h || nk != n || errk != err {
			t.Fatalf("prefix %d of %q: %+v %d %v; whole: %+v %d %v", k, b, hk, nk, errk, h, n, err)
		}
	}
}

func TestAppendRoundTrip(t *testing.T) {
	for _, h := range []Header{
		{Source: src4, Dest: dst4},
		{Source: src6, Dest: dst6},
		{Source: netip.AddrPortFrom(netip.AddrFrom16(src4.Addr().As16()), 4000), Dest: dst4}, // mapped: written as v4
		{Source: src4, Dest: dst6}, // mixed: written as v6, v4 mapped
	} {
		want := Header{Source: unmap(h.Source), Dest: unmap(h.Dest)}
		for name, b := range map[string][]byte{"v1": AppendV1(nil, h), "v2": AppendV2(nil, h)} {
			got, n, err := Parse(append(b, "SSH-2.0-x\r\n"...))
			if err != nil || n != len(b) || got != want {
				t.Fatalf("%s of %+v: %q parses as %+v %d %v", name, h, b, got, n, err)
			}
			checkSplits(t, b)
		}
	}
	// No client to tell: UNKNOWN and LOCAL.
	for _, h := range []Header{{Local: true, Source: src4, Dest: dst4}, {}, {Source: src4}, {Dest: dst6}} {
		if b := AppendV1(nil, h); string(b) != "PROXY UNKNOWN\r\n" {
			t.Errorf("v1 of %+v: %q", h, b)
		}
		if b := AppendV2(nil, h); !bytes.Equal(b, v2(0x20, 0x00)) {
			t.Errorf("v2 of %+v: %q", h, b)
		}
	}
	if b := AppendV1([]byte("x"), Header{Source: src4, Dest: dst4}); string(b) != "xPROXY TCP4 192.0.2.1 198.51.100.2 4000 443\r\n" {
		t.Errorf("append to a prefix: %q", b)
	}
}

// TestV1LineBound: the spec's longest v1 line is MaxV1Len bytes.
func TestV1LineBound(t *testing.T) {
	longest := "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
	if len(longest) != MaxV1Len {
		t.Fatalf("spec example is %d bytes", len(longest))
	}
	longest6 := "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
	if _, n, err := Parse([]byte(longest6)); err != nil || n != len(longest6) {
		t.Fatalf("longest TCP6 line (%d bytes): %d %v", len(longest6), n, err)
	}
}

func TestAnnouncedLen(t *testing.T) {
	h := AppendV2(nil, Header{Source: src4, Dest: dst4})
	huge := append(append([]byte(nil), h[:14]...), 0xFF, 0xFF)
	for _, tc := range []struct {
		in   []byte
		want int
	}{
		{h[:15], 0}, {h[:16], len(h)}, {h, len(h)}, {huge, 16 + 0xFFFF},
		{[]byte("PROXY TCP4 1.2.3.4"), 0}, {[]byte("GET /"), 0},
	} {
		if got := announcedLen(tc.in); got != tc.want {
			t.Errorf("announcedLen(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(AppendV1(nil, Header{Source: src4, Dest: dst4}))
	f.Add(AppendV2(nil, Header{Source: src6, Dest: dst6}))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, n, err := Parse(data)
		switch {
		case err == nil:
			if n <= 0 || n > len(data) {
				t.Fatalf("n=%d for %d bytes", n, len(data))
			}
			if h.Local != (!h.Source.IsValid() && !h.Dest.IsValid()) || (!h.Local && (!h.Source.IsValid() || !h.Dest.IsValid())) {
				t.Fatalf("header %+v: Local and the addresses disagree", h)
			}
		case errors.Is(err, ErrIncomplete), errors.Is(err, ErrNotProxy), errors.Is(err, ErrInvalid):
			if n != 0 || h != (Header{}) {
				t.Fatalf("%v with %+v, n=%d", err, h, n)
			}
		default:
			t.Fatalf("unexpected error %v", err)
		}
		if len(data) <= 512 {
			checkSplits(t, data)
		}
		if err == nil && !h.Local { // what was read is written back the same
			want := Header{Source: unmap(h.Source), Dest: unmap(h.Dest)}
			for _, b := range [][]byte{AppendV1(nil, h), AppendV2(nil, h)} {
				if got, m, err := Parse(b); err != nil || m != len(b) || got != want {
					t.Fatalf("%+v written as %q reads %+v %d %v", h, b, got, m, err)
				}
			}
		}
	})
}

func unmap(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }
