package protocols

import (
	"bytes"
	"encoding/binary"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/darkit/protoplex/internal/testnet"
)

// recordedDatagrams returns every recorded first datagram by file name
// (testdata/datagrams, recreated by testdata/record-datagrams.sh; a file
// name's prefix before the first "-" is the protocol's YAML name).
func recordedDatagrams(tb testing.TB) map[string][]byte {
	tb.Helper()
	return testnet.Datagrams(tb, "")
}

// recordedFlows returns every recorded flow by name: a file NAME.bin is a
// flow of one datagram, files NAME-1.bin, NAME-2.bin, ... one of several
// (its name is NAME).
func recordedFlows(tb testing.TB) map[string][][]byte {
	tb.Helper()
	files := recordedDatagrams(tb)
	out := map[string][][]byte{}
	for name, dg := range files {
		base := strings.TrimSuffix(name, ".bin")
		if i := strings.LastIndexByte(base, '-'); i > 0 && files[base[:i]+"-1.bin"] != nil {
			continue // part of base[:i]'s flow
		}
		out[base] = [][]byte{dg}
	}
	for name := range files {
		base, ok := strings.CutSuffix(name, "-1.bin")
		if !ok {
			continue
		}
		var flow [][]byte
		for k := 1; files[base+"-"+strconv.Itoa(k)+".bin"] != nil; k++ {
			flow = append(flow, files[base+"-"+strconv.Itoa(k)+".bin"])
		}
		out[base] = flow
	}
	return out
}

func recordedDatagram(tb testing.TB, name string) []byte {
	tb.Helper()
	b, ok := testnet.Datagrams(tb, "")[name]
	if !ok {
		tb.Fatalf("no recorded datagram %s (recreate with protocols/testdata/record-datagrams.sh)", name)
	}
	return b
}

// datagramBuiltins returns the descriptors of the built-ins on UDP, in name
// order.
func datagramBuiltins(tb testing.TB) []Descriptor {
	tb.Helper()
	var out []Descriptor
	for _, d := range Descriptors() {
		if d.Transports&UDP != 0 {
			out = append(out, d)
		}
	}
	if len(out) == 0 {
		tb.Fatal("no built-in on UDP")
	}
	return out
}

// wireGuardTestInitiation builds a handshake initiation as the WireGuard
// protocol describes it, beside the one wireguard-go sent (recorded): type 1,
// three reserved zero bytes, sender index,
// unencrypted ephemeral (32), encrypted static (32+16), encrypted timestamp
// (12+16), mac1 (16), mac2 (16, zero without a cookie). The keys and MACs
// are random bytes, which is what they look like on the wire.
func wireGuardTestInitiation(seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, 0, wireGuardInitiationSize)
	b = append(b, 1, 0, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, r.Uint32())
	for len(b) < wireGuardInitiationSize-16 {
		b = append(b, byte(r.Uint32()))
	}
	return append(b, make([]byte, 16)...)
}

// dtlsRefragment splits the ClientHello of a recorded single-record DTLS
// datagram into handshake fragments of at most size bytes, one per record,
// and packs the records into datagrams of at most perDatagram records, in
// order (reverse reverses the fragments inside each datagram).
func dtlsRefragment(t testing.TB, dg []byte, size, perDatagram int, reverse bool) [][]byte {
	t.Helper()
	if len(dg) < dtlsRecordHeader+dtlsHandshakeHeader {
		t.Fatal("not a DTLS datagram")
	}
	hs := dg[dtlsRecordHeader:]
	length := int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3])
	body := hs[dtlsHandshakeHeader : dtlsHandshakeHeader+length]
	var records [][]byte
	for off := 0; off < length; off += size {
		n := min(size, length-off)
		rec := slices.Clone(dg[:dtlsRecordHeader])
		binary.BigEndian.PutUint16(rec[11:], uint16(dtlsHandshakeHeader+n))
		rec[10] = byte(len(records)) // record sequence number
		h := slices.Clone(hs[:dtlsHandshakeHeader])
		h[6], h[7], h[8] = byte(off>>16), byte(off>>8), byte(off)
		h[9], h[10], h[11] = byte(n>>16), byte(n>>8), byte(n)
		records = append(records, append(append(rec, h...), body[off:off+n]...))
	}
	var out [][]byte
	for len(records) > 0 {
		k := min(perDatagram, len(records))
		group := records[:k]
		if reverse {
			group = slices.Clone(group)
			slices.Reverse(group)
		}
		out = append(out, bytes.Join(group, nil))
		records = records[k:]
	}
	return out
}

func dgs(ss ...string) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}

// datagramCase is a flow's first datagrams and the verdict the datagram
// detector of the built-in registered as proto gives them.
type datagramCase struct {
	proto, name string
	datagrams   [][]byte
	want        Result
}

func datagramCases(t testing.TB) []datagramCase {
	dnsQ := recordedDatagram(t, "dns-dig.bin")
	stunReq := recordedDatagram(t, "stun-turnutils-stunclient.bin")
	sip := recordedDatagram(t, "sip-sipsak.bin")
	ovpn := recordedDatagram(t, "openvpn-openvpn.bin")
	ovpnV3 := recordedDatagram(t, "openvpn-openvpn-tlscryptv2.bin")
	dtls := recordedDatagram(t, "dtls-openssl-sni.bin")
	wg := recordedDatagram(t, "wireguard-wireguardgo.bin")
	with := func(b []byte, i int, v byte) []byte { b = slices.Clone(b); b[i] = v; return b }
	two := dtlsRefragment(t, dtls, 120, 1, false)
	three := dtlsRefragment(t, dtls, 80, 1, false)
	swapped := [][]byte{three[1], three[0], three[2]}
	nine := dtlsRefragment(t, dtls, 25, 1, false)
	dnsID38 := with(dnsQ, 0, openVPNResetV2)
	return []datagramCase{
		{"dns", "dig", [][]byte{dnsQ}, Match},
		{"dns", "no datagram yet", nil, NeedMore},
		{"dns", "root NS query", dgs("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x01"), Match},
		{"dns", "id 0x38 still dns", [][]byte{dnsID38}, Match},
		{"dns", "later datagrams ignored", [][]byte{dnsQ, []byte("x")}, Match},
		{"dns", "truncated question", [][]byte{dnsQ[:len(dnsQ)-13]}, NoMatch},
		{"dns", "opt record cut", [][]byte{dnsQ[:len(dnsQ)-1]}, NoMatch},
		{"dns", "trailing byte", [][]byte{append(slices.Clone(dnsQ), 0)}, NoMatch},
		{"dns", "no edns", [][]byte{recordedDatagram(t, "dns-dig-noedns.bin")}, Match},
		{"dns", "record with compressed name",
			dgs("\x12\x34\x28\x00\x00\x01\x00\x00\x00\x01\x00\x00\x01a\x00\x00\x06\x00\x01" +
				"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x00\x00\x04\x7f\x00\x00\x01"), Match},
		{"dns", "too many records", [][]byte{with(dnsQ, 10, 1)}, NoMatch},
		{"dns", "header only", [][]byte{dnsQ[:12]}, NoMatch},
		{"dns", "response", [][]byte{with(dnsQ, 2, dnsQ[2]|0x80)}, NoMatch},
		{"dns", "no question", [][]byte{with(dnsQ, 5, 0)}, NoMatch},
		{"dns", "opcode 2 (status)", [][]byte{with(dnsQ, 2, 2<<3)}, NoMatch},
		{"dns", "compression pointer first", [][]byte{with(dnsQ, 12, 0xc0)}, NoMatch},
		{"dns", "sip is not dns", [][]byte{sip}, NoMatch},
		{"stun", "binding request", [][]byte{stunReq}, Match},
		{"stun", "allocate", [][]byte{recordedDatagram(t, "stun-turnutils-uclient.bin")}, Match},
		{"stun", "binding indication", dgs("\x00\x11\x00\x00\x21\x12\xa4\x42" + strings.Repeat("\x07", 12)), Match},
		{"stun", "no datagram yet", nil, NeedMore},
		{"stun", "success response", [][]byte{with(stunReq, 0, 0x01)}, NoMatch},
		{"stun", "error response", dgs("\x01\x11\x00\x00\x21\x12\xa4\x42" + strings.Repeat("\x07", 12)), NoMatch},
		{"stun", "length beyond the datagram", [][]byte{with(stunReq, 3, 4)}, NoMatch},
		{"stun", "trailing bytes", [][]byte{append(slices.Clone(stunReq), 0, 0, 0, 0)}, NoMatch},
		{"stun", "short header", [][]byte{stunReq[:19]}, NoMatch},
		{"stun", "no magic cookie", [][]byte{with(stunReq, 4, 0x22)}, NoMatch},
		{"stun", "rfc 3489 (no cookie)", dgs("\x00\x01\x00\x00" + strings.Repeat("\x5a", 16)), NoMatch},
		{"sip", "sipsak options", [][]byte{sip}, Match},
		{"sip", "invite", dgs("INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP a\r\n\r\n"), Match},
		{"sip", "status line", dgs("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a\r\n\r\n"), Match},
		{"sip", "status line lf", dgs("SIP/2.0 180 Ringing\n"), Match},
		{"sip", "no datagram yet", nil, NeedMore},
		{"sip", "request line cut", dgs("OPTIONS sip:a@b SIP/2.0"), NoMatch},
		{"sip", "keep-alive", dgs("\r\n\r\n"), NoMatch},
		{"sip", "status 2000", dgs("SIP/2.0 2000 OK\r\n"), NoMatch},
		{"sip", "status 099", dgs("SIP/2.0 099 X\r\n"), NoMatch},
		{"sip", "status control byte", dgs("SIP/2.0 200 O\x01K\r\n"), NoMatch},
		{"sip", "rtsp", dgs("OPTIONS rtsp://a/b RTSP/1.0\r\n"), NoMatch},
		{"sip", "http", dgs("GET / HTTP/1.1\r\n\r\n"), NoMatch},
		{"openvpn", "v2 plain", [][]byte{ovpn}, Match},
		{"openvpn", "v3 tls-crypt-v2", [][]byte{ovpnV3}, Match},
		{"openvpn", "no datagram yet", nil, NeedMore},
		{"openvpn", "v2 with payload", [][]byte{append(slices.Clone(ovpn), 0, 0x0f, 0, 2)}, Match},
		{"openvpn", "key id 1", [][]byte{with(ovpn, 0, openVPNResetV2|1)}, NoMatch},
		{"openvpn", "server reset", [][]byte{with(ovpn, 0, 8<<3)}, NoMatch},
		{"openvpn", "ack not empty", [][]byte{with(ovpn, 9, 1)}, NoMatch},
		{"openvpn", "message packet-id 1", [][]byte{with(ovpn, 13, 1)}, NoMatch},
		{"openvpn", "truncated", [][]byte{ovpn[:13]}, NoMatch},
		{"openvpn", "length prefixed (tcp framing)", [][]byte{append([]byte{0, 14}, ovpn...)}, NoMatch},
		{"openvpn", "v3 key length too long", [][]byte{with(ovpnV3, len(ovpnV3)-2, 0x7f)}, NoMatch},
		{"openvpn", "v3 replay id 0", [][]byte{with(ovpnV3, 12, 0)}, NoMatch},
		{"openvpn", "v3 truncated", [][]byte{ovpnV3[:60]}, NoMatch},
		{"openvpn", "dns query with its id", [][]byte{dnsID38}, NoMatch},
		{"openvpn", "too long", [][]byte{append(slices.Clone(ovpn), make([]byte, openVPNMax)...)}, NoMatch},
		{"wireguard", "wireguard-go", [][]byte{wg}, Match},
		{"wireguard", "built initiation", [][]byte{wireGuardTestInitiation(2)}, Match},
		{"wireguard", "no datagram yet", nil, NeedMore},
		{"wireguard", "147 bytes", [][]byte{wg[:147]}, NoMatch},
		{"wireguard", "149 bytes", [][]byte{append(slices.Clone(wg), 0)}, NoMatch},
		{"wireguard", "response (type 2)", [][]byte{with(wg, 0, 2)[:92]}, NoMatch},
		{"wireguard", "type 2 at 148", [][]byte{with(wg, 0, 2)}, NoMatch},
		{"wireguard", "transport data", [][]byte{with(wg, 0, 4)}, NoMatch},
		{"wireguard", "reserved not zero", [][]byte{with(wg, 3, 1)}, NoMatch},
		{"dtls", "openssl client hello", [][]byte{dtls}, Match},
		{"dtls", "no sni", [][]byte{recordedDatagram(t, "dtls-openssl-nosni.bin")}, Match},
		{"dtls", "dtls 1.0", [][]byte{recordedDatagram(t, "dtls-openssl-v10.bin")}, Match},
		{"dtls", "openssl, mtu 256", recordedFlows(t)["dtls-openssl-mtu"], Match},
		{"dtls", "openssl, mtu 256, retransmitted", [][]byte{recordedDatagram(t, "dtls-openssl-mtu-1.bin"),
			recordedDatagram(t, "dtls-openssl-mtu-1.bin"), recordedDatagram(t, "dtls-openssl-mtu-2.bin")}, Match},
		{"dtls", "second fragment first", [][]byte{recordedDatagram(t, "dtls-openssl-mtu-2.bin")}, NoMatch},
		{"dtls", "no datagram yet", nil, NeedMore},
		{"dtls", "later datagram ignored", [][]byte{dtls, []byte("junk")}, Match},
		{"dtls", "first of two fragments", two[:1], NeedMore},
		{"dtls", "two fragments", two, Match},
		{"dtls", "three fragments", three, Match},
		{"dtls", "three, two first", swapped, NoMatch}, // a first datagram starts the message
		{"dtls", "three, last first", [][]byte{three[0], three[2], three[1]}, Match},
		{"dtls", "three, one retransmitted", [][]byte{three[0], three[0], three[1], three[2]}, Match},
		{"dtls", "three in one datagram", dtlsRefragment(t, dtls, 80, 3, false), Match},
		{"dtls", "three in one datagram, reversed", dtlsRefragment(t, dtls, 80, 3, true), NoMatch},
		{"dtls", "nine datagrams: beyond the bound", nine, NoMatch},
		{"dtls", "eight of nine", nine[:8], NeedMore},
		{"dtls", "junk after the first fragment", [][]byte{two[0], []byte("junk")}, NoMatch},
		{"dtls", "other message length", [][]byte{two[0], with(two[1], 15, two[1][15]+1)}, NoMatch},
		{"dtls", "record cut", [][]byte{dtls[:len(dtls)-1]}, NoMatch},
		{"dtls", "trailing byte", [][]byte{append(slices.Clone(dtls), 0)}, NoMatch},
		{"dtls", "epoch 1", [][]byte{with(dtls, 4, 1)}, NoMatch},
		{"dtls", "tls record version", [][]byte{with(dtls, 1, 3)}, NoMatch},
		{"dtls", "record version 0xfefc", [][]byte{with(dtls, 2, 0xfc)}, NoMatch},
		{"dtls", "server hello", [][]byte{with(dtls, 13, 2)}, NoMatch},
		{"dtls", "client version tls", [][]byte{with(dtls, 25, 3)}, NoMatch},
		{"dtls", "alert record", [][]byte{with(dtls, 0, 21)}, NoMatch},
		{"dtls", "tls client hello", [][]byte{tlsTestRecords(tlsTestHello("a.example", nil, 0, 0), tlsMaxRecord)}, NoMatch},
	}
}

// checkDatagrams asserts the verdict on datagrams, that a decision made on
// the first k datagrams is the decision on every longer list, that the
// detector modifies nothing, and that it does not allocate.
func checkDatagrams(t *testing.T, name string, detect DatagramFunc, datagrams [][]byte, want Result) {
	t.Helper()
	orig := make([][]byte, len(datagrams))
	for i, d := range datagrams {
		orig[i] = slices.Clone(d)
	}
	if got := detect(datagrams); got != want {
		t.Fatalf("%s: %d datagrams: %v, want %v", name, len(datagrams), got, want)
	}
	decided := NeedMore
	for k := 0; k <= len(datagrams); k++ {
		r := detect(datagrams[:k])
		if decided != NeedMore && r != decided {
			t.Fatalf("%s: %d datagrams say %v after fewer said %v", name, k, r, decided)
		}
		if r != NeedMore {
			decided = r
		}
	}
	for i := range datagrams {
		if !bytes.Equal(datagrams[i], orig[i]) {
			t.Fatalf("%s: datagram %d modified", name, i)
		}
	}
	if !raceEnabled {
		if n := testing.AllocsPerRun(10, func() { detect(datagrams) }); n != 0 {
			t.Fatalf("%s: %v allocations per call", name, n)
		}
	}
}

// TestDatagramCatalogue: every case's verdict, kept however many of its
// datagrams have arrived, without allocation.
func TestDatagramCatalogue(t *testing.T) {
	for _, c := range datagramCases(t) {
		t.Run(c.proto+"/"+c.name, func(t *testing.T) {
			p := builtin(t, c.proto)
			if p.Datagram == nil {
				t.Fatalf("%s has no datagram detector", c.proto)
			}
			checkDatagrams(t, c.name, p.Datagram, c.datagrams, c.want)
		})
	}
}

// TestDatagramCross: every recorded flow matches its own protocol's
// datagram detector, which rejects none of its first datagrams, and no
// other built-in's; its first datagram cut short matches no other
// built-in either, and detectors that check the datagram's size reject it.
// Every built-in on UDP has a recorded flow; WireGuard also two built
// initiations (wireGuardTestInitiation).
func TestDatagramCross(t *testing.T) {
	ds := datagramBuiltins(t)
	flows := recordedFlows(t)
	flows["wireguard-built-1"] = [][]byte{wireGuardTestInitiation(1)}
	flows["wireguard-built-2"] = [][]byte{wireGuardTestInitiation(2)}
	sizeChecked := map[string]bool{"STUN": true, "WireGuard": true, "DTLS": true, "DNS": true}
	own := map[string]int{}
	for name, flow := range flows {
		proto := strings.SplitN(name, "-", 2)[0]
		pd, ok := Describe(proto)
		if !ok || pd.Datagram == nil {
			t.Errorf("%s: %q is not a built-in on UDP", name, proto)
			continue
		}
		for _, d := range ds {
			got := d.Datagram(flow)
			if d.Name == pd.Name {
				if got != Match {
					t.Errorf("%s: own detector %s says %v", name, d.Name, got)
				}
				for k := range len(flow) {
					if r := d.Datagram(flow[:k]); r == NoMatch {
						t.Errorf("%s: own detector %s says %v on %d of %d datagrams", name, d.Name, r, k, len(flow))
					}
				}
				own[d.Name]++
			} else if got != NoMatch {
				t.Errorf("%s detector says %v on %s, want NoMatch", d.Name, got, name)
			}
			dg := flow[0]
			for k := range len(dg) {
				r := d.Datagram([][]byte{dg[:k]})
				switch {
				case d.Name != pd.Name && r != NoMatch:
					t.Errorf("%s detector says %v on %s cut to %d bytes", d.Name, r, name, k)
				case d.Name == pd.Name && sizeChecked[d.Name] && r != NoMatch:
					t.Errorf("%s: own detector %s says %v on %d of %d bytes", name, d.Name, r, k, len(dg))
				}
			}
		}
	}
	for _, d := range ds {
		if own[d.Name] == 0 {
			t.Errorf("no first datagram for %s", d.Name)
		}
	}
}

// TestDatagramInspect: the metadata DTLS's inspector reads, whole or
// fragmented in every way dtlsRefragment has: ok only once the datagrams
// decide, and the same from then on.
func TestDatagramInspect(t *testing.T) {
	sni := recordedDatagram(t, "dtls-openssl-sni.bin")
	want := Metadata{SNI: "example.com", ALPN: []string{"h2", "coap"}}
	inspect := builtin(t, "dtls").InspectDatagram
	check := func(name string, datagrams [][]byte, want Metadata) {
		t.Helper()
		decided := false
		for k := 0; k <= len(datagrams); k++ {
			md, ok := inspect(datagrams[:k])
			r := detectDTLS(datagrams[:k])
			if ok != (r != NeedMore) {
				t.Fatalf("%s: %d datagrams: inspect ok %v, detector %v", name, k, ok, r)
			}
			if decided && !ok {
				t.Fatalf("%s: %d datagrams: not ok after fewer were", name, k)
			}
			if ok && r == Match && !reflect.DeepEqual(md, want) {
				t.Fatalf("%s: %d datagrams: %+v, want %+v", name, k, md, want)
			}
			decided = ok
		}
		if !decided {
			t.Fatalf("%s: never decided", name)
		}
	}
	check("whole", [][]byte{sni}, want)
	check("nosni", [][]byte{recordedDatagram(t, "dtls-openssl-nosni.bin")}, Metadata{})
	check("dtls 1.0", [][]byte{recordedDatagram(t, "dtls-openssl-v10.bin")}, Metadata{})
	mtu := recordedFlows(t)["dtls-openssl-mtu"]
	if len(mtu) != 2 {
		t.Fatalf("dtls-openssl-mtu: %d datagrams, want 2", len(mtu))
	}
	check("openssl fragmented", mtu, Metadata{SNI: "frag.example", ALPN: []string{"h2"}})
	for _, size := range []int{30, 64, 100, 200} {
		for per := 1; per <= 4; per++ {
			frags := dtlsRefragment(t, sni, size, per, false)
			if len(frags) > dtlsMaxDatagrams {
				continue
			}
			check("fragmented", frags, want)
		}
	}
	if md, ok := inspect(dgs("not dtls")); !ok || !reflect.DeepEqual(md, Metadata{}) {
		t.Errorf("not dtls: %+v, %v; want no metadata, ok", md, ok)
	}
	frags := dtlsRefragment(t, sni, 100, 1, false)
	if _, ok := inspect(frags[:1]); ok {
		t.Error("a first fragment alone gives metadata")
	}
	// A ClientHello in one datagram is read in place: the allocations are
	// the metadata's (the SNI, each ALPN string, the ALPN slice growing).
	if n := testing.AllocsPerRun(10, func() { inspect([][]byte{sni}) }); !raceEnabled && n > 5 {
		t.Errorf("whole ClientHello: %v allocations, want at most 5", n)
	}
}

// TestDatagramFalsePositives: random datagrams (length 1–1500), all-zero
// and all-0xff ones match no datagram detector, and random bytes behind a
// recorded datagram's first bytes match no other protocol's. Each detector's fixed fields
// make a random match far less likely than 1 in 10^6 (WireGuard: a length
// of 148 and 4 fixed bytes; STUN: the cookie; DNS: QR, opcode, Z, QDCOUNT,
// ANCOUNT, a question's root; OpenVPN: an opcode byte and a layout's zeros;
// SIP: a method; DTLS: 11 fixed bytes), so the test allows none.
func TestDatagramFalsePositives(t *testing.T) {
	n := 200_000
	if testing.Short() || raceEnabled {
		n = 20_000
	}
	ds := datagramBuiltins(t)
	r := rand.New(rand.NewPCG(16, 2))
	buf := make([]byte, 64<<10)
	for i := range n {
		d := buf[:1+r.IntN(1500)]
		switch i % 8 {
		case 0:
			clear(d)
		case 1:
			for j := range d {
				d[j] = 0xff
			}
		default:
			for j := range d {
				d[j] = byte(r.Uint32())
			}
		}
		for _, desc := range ds {
			if desc.Datagram([][]byte{d}) == Match {
				t.Errorf("%s matches a random datagram of %d bytes: %x", desc.Name, len(d), truncate(d))
			}
		}
	}
	// Adversarial: random bytes behind the first 1–4 bytes of a recorded
	// first datagram, at its length (magic-byte and size collisions): no
	// other protocol's detector matches.
	flows := recordedFlows(t)
	names := slices.Sorted(maps.Keys(flows))
	for i := range n / 4 {
		name := names[i%len(names)]
		own, _ := Describe(strings.SplitN(name, "-", 2)[0])
		first := flows[name][0]
		d := buf[:len(first)]
		k := copy(d, first[:min(len(first), 1+r.IntN(4))])
		for j := k; j < len(d); j++ {
			d[j] = byte(r.Uint32())
		}
		for _, desc := range ds {
			if desc.Name != own.Name && desc.Datagram([][]byte{d}) == Match {
				t.Errorf("%s matches random bytes behind %d bytes of %s: %x", desc.Name, k, name, truncate(d))
			}
		}
	}
}

// TestTransportsSpec: which transports a route takes, and the detectors
// its Spec carries for them.
func TestTransportsSpec(t *testing.T) {
	user := func(transport string) *Protocol {
		return &Protocol{Name: "mine", Transport: transport, MatchStartBytes: [][]byte{[]byte("HELLO")}}
	}
	for _, c := range []struct {
		name string
		p    *Protocol
		want Transports
	}{
		{"dns", NewDNSProtocol("x:1"), TCP | UDP},
		{"dns tcp", func() *Protocol { p := NewDNSProtocol("x:1"); p.Transport = "tcp"; return p }(), TCP},
		{"dns udp", func() *Protocol { p := NewDNSProtocol("x:1"); p.Transport = "udp"; return p }(), UDP},
		{"dtls", NewDTLSProtocol("x:1"), UDP},
		{"dtls tcp", func() *Protocol { p := NewDTLSProtocol("x:1"); p.Transport = "tcp"; return p }(), 0},
		{"http", NewHTTPProtocol("x:1"), TCP},
		{"http udp", func() *Protocol { p := NewHTTPProtocol("x:1"); p.Transport = "udp"; return p }(), 0},
		{"user", user(""), TCP},
		{"user tcp", user("tcp"), TCP},
		{"user udp", user("udp"), UDP},
		{"user sctp", user("sctp"), 0},
	} {
		s := c.p.Spec()
		if got := c.p.Transports(); got != c.want || s.Transports != c.want {
			t.Errorf("%s: transports %v, spec %v; want %v", c.name, got, s.Transports, c.want)
		}
		if s.Detect == nil || (s.Datagram != nil) != (c.want&UDP != 0) {
			t.Errorf("%s: spec Detect set %v, Datagram set %v", c.name, s.Detect != nil, s.Datagram != nil)
		}
		if c.want&TCP == 0 && s.Detect([]byte("HELLO")) != NoMatch {
			t.Errorf("%s: not on TCP, but its stream detector matches", c.name)
		}
		if c.want&TCP == 0 && c.p.Detector()([]byte("HELLO")) != NoMatch {
			t.Errorf("%s: not on TCP, but Detector matches", c.name)
		}
	}
	s := user("udp").Spec()
	for _, c := range []struct {
		datagrams [][]byte
		want      Result
	}{
		{nil, NeedMore},
		{dgs("HELLO world"), Match},
		{dgs("HELL"), NoMatch}, // the datagram is all there is
		{dgs("HELLX"), NoMatch},
		{dgs("nope", "HELLO"), NoMatch}, // the first datagram decides
	} {
		if got := s.Datagram(c.datagrams); got != c.want {
			t.Errorf("user udp: %q: %v, want %v", c.datagrams, got, c.want)
		}
	}
	if s.Structural || !NewDNSProtocol("x:1").Spec().Structural || !NewWireGuardProtocol("x:1").Spec().Structural {
		t.Error("Structural: byte fields are not, built-in detectors are")
	}
	for tr, want := range map[Transports]string{0: "none", TCP: "tcp", UDP: "udp", TCP | UDP: "tcp,udp", 4: "Transports(?)"} {
		if tr.String() != want {
			t.Errorf("%d: %q, want %q", tr, tr.String(), want)
		}
	}
}

// FuzzDatagrams: every datagram detector, on data cut into up to three
// datagrams: no panic, nothing modified, a decision on the first k
// datagrams is the decision on all of them, and an inspector's ok metadata
// stays.
func FuzzDatagrams(f *testing.F) {
	for _, dg := range recordedDatagrams(f) {
		f.Add(dg, uint16(len(dg)), uint16(len(dg)))
	}
	dtls := recordedDatagram(f, "dtls-openssl-sni.bin")
	frags := dtlsRefragment(f, dtls, 120, 1, false)
	f.Add(bytes.Join(frags, nil), uint16(len(frags[0])), uint16(len(frags[0])+len(frags[1])))
	f.Add(wireGuardTestInitiation(3), uint16(148), uint16(148))
	ds := datagramBuiltins(f)
	f.Fuzz(func(t *testing.T, data []byte, cut1, cut2 uint16) {
		a := min(int(cut1), len(data))
		b := min(max(int(cut2), a), len(data))
		datagrams := [][]byte{data[:a], data[a:b], data[b:]}
		orig := slices.Clone(data)
		for _, d := range ds {
			decided := NeedMore
			for k := 0; k <= len(datagrams); k++ {
				r := d.Datagram(datagrams[:k])
				if decided != NeedMore && r != decided {
					t.Fatalf("%s: %d datagrams say %v after fewer said %v", d.Name, k, r, decided)
				}
				if r != NeedMore {
					decided = r
				}
			}
			if d.InspectDatagram != nil {
				var first Metadata
				okBefore := false
				for k := 0; k <= len(datagrams); k++ {
					md, ok := d.InspectDatagram(datagrams[:k])
					if okBefore && (!ok || !reflect.DeepEqual(md, first)) {
						t.Fatalf("%s: inspect of %d datagrams %+v, %v after fewer gave %+v", d.Name, k, md, ok, first)
					}
					if ok && !okBefore {
						first, okBefore = md, true
					}
				}
			}
		}
		if !bytes.Equal(data, orig) {
			t.Fatal("data modified")
		}
	})
}

// BenchmarkDatagram: one datagram detector call on its protocol's recorded
// flow (and DTLS on a ClientHello in three fragments).
func BenchmarkDatagram(b *testing.B) {
	flows := recordedFlows(b)
	for _, name := range slices.Sorted(maps.Keys(flows)) {
		d, ok := Describe(strings.SplitN(name, "-", 2)[0])
		if !ok || d.Datagram == nil {
			b.Fatalf("%s: not a built-in on UDP", name)
		}
		datagrams := flows[name]
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if d.Datagram(datagrams) != Match {
					b.Fatal("no match")
				}
			}
		})
	}
	frags := dtlsRefragment(b, recordedDatagram(b, "dtls-openssl-sni.bin"), 80, 1, false)
	b.Run("dtls-three-fragments", func(b *testing.B) {
		for b.Loop() {
			if detectDTLS(frags) != Match {
				b.Fatal("no match")
			}
		}
	})
}
