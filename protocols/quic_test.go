package protocols

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/darkit/protoplex/internal/testnet"
)

var (
	quicV1 = &quicVersions[0]
	quicV2 = &quicVersions[1]
	// quicRFCConnID is the client's Destination Connection ID of the
	// examples of RFC 9001 Appendix A and RFC 9369 Appendix A.
	quicRFCConnID = quicHex("8394c8f03e515708")
)

func quicHex(s string) []byte {
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		panic(err)
	}
	return b
}

// TestQUICInitialSecretsRFC checks the client Initial key, IV and header
// protection key against RFC 9001 Appendix A.1 and RFC 9369 Appendix A.1.
func TestQUICInitialSecretsRFC(t *testing.T) {
	for _, tc := range []struct {
		v           *quicVersion
		key, iv, hp string
	}{
		{quicV1, "1f369613dd76d5467730efcbe3b1a22d", "fa044b2f42a3fd3b46fb255c", "9f50449e04a0e810283a1e9933adedd2"},
		{quicV2, "8b1a0bc121284290a29e0971b5cd045d", "91f73e2351d8fa91660e909f", "45b95e15235d6f45a6b19cbcb0294ba9"},
	} {
		key, iv, hp := quicClientSecrets(tc.v, quicRFCConnID)
		if hex.EncodeToString(key) != tc.key || hex.EncodeToString(iv) != tc.iv || hex.EncodeToString(hp) != tc.hp {
			t.Errorf("version %#x: key %x iv %x hp %x, want %s %s %s", tc.v.number, key, iv, hp, tc.key, tc.iv, tc.hp)
		}
	}
}

// TestQUICClientInitialRFC decrypts the sample client Initials of RFC 9001
// Appendix A.2 and RFC 9369 Appendix A.2, reads their ClientHello, and
// checks the test's encoder rebuilds them byte for byte (the split tests
// build packets with it).
func TestQUICClientInitialRFC(t *testing.T) {
	frames := quicHex(quicRFCFrames)
	for _, tc := range []struct {
		v      *quicVersion
		packet string
	}{{quicV1, quicRFC9001Packet}, {quicV2, quicRFC9369Packet}} {
		pkt := quicHex(tc.packet)
		orig := bytes.Clone(pkt)
		if got := detectQUIC([][]byte{pkt}); got != Match {
			t.Fatalf("version %#x: detect = %v, want Match", tc.v.number, got)
		}
		p, ok := quicParseLong(pkt)
		if !ok || !p.initial || p.version != tc.v || p.size != len(pkt) || p.pnOffset != 18 {
			t.Fatalf("version %#x: header %+v, %v", tc.v.number, p, ok)
		}
		k := quicClientKeys(tc.v, p.dcid)
		payload, _, ok := quicOpen(&k, pkt, p.pnOffset, nil)
		want := append(bytes.Clone(frames), make([]byte, 1162-len(frames))...)
		if !ok || !bytes.Equal(payload, want) {
			t.Fatalf("version %#x: payload %x, %v, want %x", tc.v.number, payload, ok, want)
		}
		md, ok := inspectQUIC([][]byte{pkt})
		if !ok || md.SNI != "example.com" || !slices.Equal(md.ALPN, []string{"alpn"}) {
			t.Fatalf("version %#x: inspect = %+v, %v", tc.v.number, md, ok)
		}
		if !bytes.Equal(pkt, orig) {
			t.Fatalf("version %#x: the datagram was modified", tc.v.number)
		}
		if got := quicSeal(t, tc.v, quicRFCConnID, nil, 2, want); !bytes.Equal(got, pkt) {
			t.Fatalf("version %#x: the test's encoder gives\n%x\nwant\n%x", tc.v.number, got, pkt)
		}
	}
}

// quicSeal builds a protected client Initial of version v, packet number
// pn on 4 bytes, no token, carrying payload (RFC 9001 §5).
func quicSeal(t testing.TB, v *quicVersion, dcid, scid []byte, pn uint32, payload []byte) []byte {
	t.Helper()
	return quicSealFlags(t, v, dcid, scid, nil, pn, payload, 0)
}

// quicSealFlags is quicSeal with a token (from a server's NEW_TOKEN or
// Retry) and extra bits set in the first byte, under the header protection.
func quicSealFlags(t testing.TB, v *quicVersion, dcid, scid, token []byte, pn uint32, payload []byte, flags byte) []byte {
	t.Helper()
	k := quicClientKeys(v, dcid)
	hdr := []byte{0xc0 | v.initialType<<4 | flags | 3}
	hdr = binary.BigEndian.AppendUint32(hdr, v.number)
	hdr = append(append(hdr, byte(len(dcid))), dcid...)
	hdr = append(append(hdr, byte(len(scid))), scid...)
	hdr = append(quicAppendVarint(hdr, uint64(len(token))), token...)
	length := 4 + len(payload) + quicTagLen
	if length >= 1<<14 {
		t.Fatalf("payload of %d bytes too long for a 2-byte length", len(payload))
	}
	hdr = binary.BigEndian.AppendUint16(hdr, 0x4000|uint16(length))
	pnOffset := len(hdr)
	hdr = binary.BigEndian.AppendUint32(hdr, pn)
	nonce := k.iv
	for i := range 4 {
		nonce[len(nonce)-1-i] ^= byte(pn >> (8 * i))
	}
	pkt := k.aead.Seal(bytes.Clone(hdr), nonce[:], payload, hdr)
	var mask [16]byte
	k.hp.Encrypt(mask[:], pkt[pnOffset+4:pnOffset+4+quicSampleLen])
	pkt[0] ^= mask[0] & 0x0f
	for i := range 4 {
		pkt[pnOffset+i] ^= mask[1+i]
	}
	return pkt
}

// quicOverhead is what quicSeal adds to a payload.
func quicOverhead(dcid []byte) int { return 1 + 4 + 1 + len(dcid) + 1 + 1 + 2 + 4 + quicTagLen }

func quicAppendVarint(b []byte, v uint64) []byte {
	switch {
	case v < 1<<6:
		return append(b, byte(v))
	case v < 1<<14:
		return binary.BigEndian.AppendUint16(b, 0x4000|uint16(v))
	case v < 1<<30:
		return binary.BigEndian.AppendUint32(b, 0x80000000|uint32(v))
	}
	return binary.BigEndian.AppendUint64(b, 0xc0<<56|v)
}

// quicCryptoFrame is a CRYPTO frame carrying ch[off:end].
func quicCryptoFrame(ch []byte, off, end int) []byte {
	f := quicAppendVarint([]byte{0x06}, uint64(off))
	f = quicAppendVarint(f, uint64(end-off))
	return append(f, ch[off:end]...)
}

// quicDatagram coalesces one client Initial per payload (packet numbers
// from pn) and pads the last one with PADDING frames to a 1200-byte
// datagram.
func quicDatagram(t testing.TB, v *quicVersion, dcid []byte, pn uint32, payloads ...[]byte) []byte {
	t.Helper()
	var d []byte
	for i, p := range payloads {
		if i == len(payloads)-1 {
			if short := quicMinInitialDatagram - len(d) - quicOverhead(dcid) - len(p); short > 0 {
				p = append(bytes.Clone(p), make([]byte, short)...)
			}
		}
		d = append(d, quicSeal(t, v, dcid, []byte{1, 2, 3, 4}, pn+uint32(i), p)...)
	}
	return d
}

// quicChromiumHello is a real post-quantum ClientHello (Chromium's, with an
// X25519MLKEM768 key share, about 1.8 KB): the handshake message of a
// recorded TLS flight, which no client on this machine sends over QUIC.
func quicChromiumHello(t testing.TB) []byte {
	t.Helper()
	rec := testnet.Flight(t, "tls-chromium.bin")
	if n := int(rec[3])<<8 | int(rec[4]); n != len(rec)-tlsRecordHeader {
		t.Fatalf("tls-chromium.bin: a record of %d bytes in %d", n, len(rec))
	}
	return rec[tlsRecordHeader:]
}

// checkQUIC asserts, for every prefix of datagrams (the engine calls the
// detector and inspector after each datagram), that the detector matches
// from the first datagram and the inspector is ok from datagram okAt on
// (1-based; 0 = never) with md, and that no datagram is modified.
func checkQUIC(t *testing.T, name string, datagrams [][]byte, okAt int, want Metadata) {
	t.Helper()
	orig := make([][]byte, len(datagrams))
	for i, d := range datagrams {
		orig[i] = bytes.Clone(d)
	}
	for n := 1; n <= len(datagrams); n++ {
		if got := detectQUIC(datagrams[:n]); got != Match {
			t.Fatalf("%s: detect of %d datagrams = %v, want Match", name, n, got)
		}
		md, ok := inspectQUIC(datagrams[:n])
		switch wantOK := okAt != 0 && n >= okAt; {
		case ok != wantOK:
			t.Fatalf("%s: inspect of %d datagrams: ok %v, want %v (%+v)", name, n, ok, wantOK, md)
		case ok && !reflect.DeepEqual(md, want):
			t.Fatalf("%s: inspect of %d datagrams = %+v, want %+v", name, n, md, want)
		}
	}
	for i := range datagrams {
		if !bytes.Equal(datagrams[i], orig[i]) {
			t.Fatalf("%s: datagram %d modified", name, i)
		}
	}
}

// quicRecorded returns the recorded first flights of QUIC clients, by
// name: NAME.bin is a flight of one datagram, NAME-1.bin, NAME-2.bin... the
// datagrams of a flight in order.
func quicRecorded(tb testing.TB) map[string][][]byte {
	tb.Helper()
	all := recordedDatagrams(tb)
	names := slices.Sorted(maps.Keys(all)) // NAME-1 before NAME-2 (at most 9 datagrams)
	out := map[string][][]byte{}
	for _, file := range names {
		name, ok := strings.CutSuffix(file, ".bin")
		if !ok || !strings.HasPrefix(name, "quic-") {
			continue
		}
		if k := strings.LastIndexByte(name, '-'); len(name)-k == 2 && name[k+1] >= '1' && name[k+1] <= '9' {
			name = name[:k]
		}
		out[name] = append(out[name], all[file])
	}
	if len(out) == 0 {
		tb.Fatal("no recorded QUIC datagram (recreate with protocols/testdata/record-quic.sh)")
	}
	return out
}

// TestQUICRecorded reads the first flights real clients sent: ngtcp2's
// gtlsclient (QUIC version 1, one datagram) and quic-go's client (versions
// 1 and 2, a post-quantum ClientHello in CRYPTO frames spread over two
// datagrams, out of order).
func TestQUICRecorded(t *testing.T) {
	want := map[string]struct {
		datagrams int
		md        Metadata
	}{
		"quic-gtlsclient": {1, Metadata{SNI: "localhost", ALPN: []string{"h3"}}},
		"quic-quicgo-v1":  {2, Metadata{SNI: "a.example", ALPN: []string{"h3"}}},
		"quic-quicgo-v2":  {2, Metadata{SNI: "b.example", ALPN: []string{"h3"}}},
	}
	got := quicRecorded(t)
	for name, w := range want {
		if len(got[name]) != w.datagrams {
			t.Fatalf("%s: %d datagrams recorded, want %d", name, len(got[name]), w.datagrams)
		}
	}
	for name, flight := range got {
		w, known := want[name]
		if !known {
			t.Fatalf("%s: no expected metadata", name)
		}
		checkQUIC(t, name, flight, w.datagrams, w.md)
	}
}

// TestQUICSplit reassembles a real 1.8 KB ClientHello from CRYPTO frames
// in coalesced packets and across datagrams, in order or not, with
// retransmissions, holes, and packets that are not the flow's Initials.
func TestQUICSplit(t *testing.T) {
	ch := quicChromiumHello(t)
	n := len(ch)
	want := Metadata{SNI: "a.example", ALPN: []string{"h2", "http/1.1"}}
	if got := tlsParseClientHello(ch[4:], false); !reflect.DeepEqual(got, want) {
		t.Fatalf("the recorded ClientHello says %+v, want %+v", got, want)
	}
	dcid := quicHex("0123456789abcdef")
	other := quicHex("fedcba9876543210")
	cf := func(off, end int) []byte { return quicCryptoFrame(ch, off, end) }
	dg := func(v *quicVersion, pn uint32, payloads ...[]byte) []byte {
		return quicDatagram(t, v, dcid, pn, payloads...)
	}
	ping := []byte{0x01}
	ack := []byte{0x02, 0x00, 0x00, 0x00, 0x00} // largest 0, delay 0, no extra range, first range 0
	half := n / 2

	tampered := dg(quicV1, 1, cf(half, n))
	tampered[len(tampered)-1] ^= 1
	short := quicSeal(t, quicV1, dcid, nil, 1, cf(half, n)) // under 1200 bytes: a server drops it
	if len(short) >= quicMinInitialDatagram {
		t.Fatalf("short datagram of %d bytes", len(short))
	}
	wrongCID := quicDatagram(t, quicV1, other, 1, cf(half, n))
	// A ClientHello cut short by a hole that never fills is read up to
	// the hole: its extensions before it count.
	cut := bytes.Index(ch, []byte("a.example")) + len("a.example") + 10
	partial := tlsParseClientHello(ch[4:cut], true)
	if partial.SNI != "a.example" {
		t.Fatalf("cut ClientHello: %+v", partial)
	}

	for _, tc := range []struct {
		name      string
		datagrams [][]byte
		okAt      int
		md        Metadata
	}{
		{"two datagrams", [][]byte{dg(quicV1, 0, cf(0, half)), dg(quicV1, 1, cf(half, n))}, 2, want},
		{"two datagrams v2", [][]byte{dg(quicV2, 0, cf(0, half)), dg(quicV2, 1, cf(half, n))}, 2, want},
		{"second half first", [][]byte{dg(quicV1, 0, cf(half, n)), dg(quicV1, 1, cf(0, half))}, 2, want},
		{"coalesced", [][]byte{dg(quicV1, 0, cf(0, 1000), cf(1000, n))}, 1, want},
		{"coalesced out of order", [][]byte{dg(quicV1, 0, cf(1000, n), cf(0, 1000))}, 1, want},
		{"frames in one packet", [][]byte{dg(quicV1, 0, append(append(cf(900, n), ping...), cf(0, 900)...))}, 1, want},
		{"one large datagram", [][]byte{dg(quicV1, 0, cf(0, n))}, 1, want},
		{"token", [][]byte{quicSealFlags(t, quicV2, dcid, nil, bytes.Repeat([]byte{7}, 100), 0, cf(0, n), 0)}, 1, want},
		{"ack and ping", [][]byte{dg(quicV1, 0, append(ack, cf(0, half)...)), dg(quicV1, 1, append(ping, cf(half, n)...))}, 2, want},
		{"overlap and retransmission", [][]byte{
			dg(quicV1, 0, cf(0, 800)), dg(quicV1, 1, cf(0, 800)), dg(quicV1, 2, cf(600, 1400)), dg(quicV1, 3, cf(1200, n)),
		}, 4, want},
		{"three datagrams", [][]byte{dg(quicV1, 0, cf(0, 600)), dg(quicV1, 1, cf(600, 1200)), dg(quicV1, 2, cf(1200, n))}, 3, want},
		{"tampered datagram skipped", [][]byte{dg(quicV1, 0, cf(0, half)), tampered, dg(quicV1, 2, cf(half, n))}, 3, want},
		{"short datagram skipped", [][]byte{dg(quicV1, 0, cf(0, half)), short, dg(quicV1, 2, cf(half, n))}, 3, want},
		{"other connection ID skipped", [][]byte{dg(quicV1, 0, cf(0, half)), wrongCID, dg(quicV1, 2, cf(half, n))}, 3, want},
		{"other version skipped", [][]byte{dg(quicV1, 0, cf(0, half)), dg(quicV2, 1, cf(half, n)), dg(quicV1, 2, cf(half, n))}, 3, want},
		{"trailing zeros", [][]byte{append(dg(quicV1, 0, cf(0, n)), make([]byte, 300)...)}, 1, want},
		{"0-RTT coalesced", [][]byte{append(dg(quicV1, 0, cf(0, half)), quicZeroRTT(dcid)...), dg(quicV1, 1, cf(half, n))}, 2, want},
		{"hole until the bound", append([][]byte{dg(quicV1, 0, cf(0, cut))},
			slices.Repeat([][]byte{dg(quicV1, 1, ping)}, quicMaxDatagrams-1)...), quicMaxDatagrams, partial},
		{"no CRYPTO data until the bound", slices.Repeat([][]byte{dg(quicV1, 0, ping)}, quicMaxDatagrams), quicMaxDatagrams, Metadata{}},
		{"not a ClientHello", [][]byte{dg(quicV1, 0, quicCryptoFrame([]byte{2, 0, 0, 1, 0}, 0, 5))}, 1, Metadata{}},
		{"unknown frame ends the packet", [][]byte{dg(quicV1, 0, append(cf(0, half), 0x08, 0x00)), dg(quicV1, 1, append([]byte{0x1f}, cf(half, n)...)), dg(quicV1, 2, cf(half, n))}, 3, want},
	} {
		t.Run(tc.name, func(t *testing.T) { checkQUIC(t, tc.name, tc.datagrams, tc.okAt, tc.md) })
	}
}

// quicZeroRTT is a long header 0-RTT packet (version 1) a client may
// coalesce after its Initial; it is skipped by its Length.
func quicZeroRTT(dcid []byte) []byte {
	b := []byte{0xd0 | 3}
	b = binary.BigEndian.AppendUint32(b, 1)
	b = append(append(b, byte(len(dcid))), dcid...)
	b = append(b, 0)
	b = quicAppendVarint(b, 40)
	return append(b, make([]byte, 40)...)
}

// TestQUICNoMatch covers first datagrams that are not a client's QUIC
// Initial, and a second datagram that cannot change the answer.
func TestQUICNoMatch(t *testing.T) {
	dcid := quicHex("0123456789abcdef")
	good := quicDatagram(t, quicV1, dcid, 0, []byte{0x01})
	mutate := func(f func(d []byte) []byte) []byte { return f(bytes.Clone(good)) }
	tlsRecord := append([]byte{0x16, 0x03, 0x01, 0x04, 0xb0, 0x01}, make([]byte, 1200)...)
	longCID := append([]byte{0xc0, 0, 0, 0, 1, 21}, make([]byte, 1300)...)
	for _, tc := range []struct {
		name string
		d    []byte
	}{
		{"empty", nil},
		{"short", good[:1199]},
		{"TLS record", tlsRecord},
		{"zeros", make([]byte, 1200)},
		{"short header", mutate(func(d []byte) []byte { d[0] &^= 0x80; return d })},
		{"fixed bit clear", mutate(func(d []byte) []byte { d[0] &^= 0x40; return d })},
		{"draft-29", mutate(func(d []byte) []byte { binary.BigEndian.PutUint32(d[1:], 0xff00001d); return d })},
		{"version 2 number on a version 1 packet", mutate(func(d []byte) []byte { binary.BigEndian.PutUint32(d[1:], quicV2.number); return d })},
		{"Handshake type", mutate(func(d []byte) []byte { d[0] = d[0]&^0x30 | 0x20; return d })},
		{"Retry type", mutate(func(d []byte) []byte { d[0] |= 0x30; return d })},
		{"ciphertext changed", mutate(func(d []byte) []byte { d[100] ^= 1; return d })},
		{"tag changed", mutate(func(d []byte) []byte { d[len(d)-1] ^= 1; return d })},
		{"connection ID changed", mutate(func(d []byte) []byte { d[6] ^= 1; return d })},
		{"connection ID of 21 bytes", longCID},
		{"length past the datagram", mutate(func(d []byte) []byte { d[len(d)-1200+19] = 0x7f; return d[:1200] })},
		{"reserved bits", quicReservedBits(t, dcid)},
	} {
		if got := detectQUIC([][]byte{tc.d}); got != NoMatch {
			t.Errorf("%s: detect = %v, want NoMatch", tc.name, got)
		}
		if got := detectQUIC([][]byte{tc.d, good}); got != NoMatch {
			t.Errorf("%s: detect with a valid second datagram = %v, want NoMatch", tc.name, got)
		}
		if md, ok := inspectQUIC([][]byte{tc.d}); !ok || !reflect.DeepEqual(md, Metadata{}) {
			t.Errorf("%s: inspect = %+v, %v, want nothing, ok", tc.name, md, ok)
		}
	}
	if got := detectQUIC(nil); got != NeedMore {
		t.Errorf("no datagram: detect = %v, want NeedMore", got)
	}
	if _, ok := inspectQUIC(nil); ok {
		t.Errorf("no datagram: inspect ok")
	}
}

// quicReservedBits is a version 1 Initial that authenticates but has a
// reserved header bit set under the header protection.
func quicReservedBits(t *testing.T, dcid []byte) []byte {
	p := quicSealFlags(t, quicV1, dcid, nil, nil, 0, make([]byte, quicMinInitialDatagram), 0x04)
	k := quicClientKeys(quicV1, dcid)
	h, _ := quicParseLong(p)
	if _, _, ok := quicOpen(&k, p, h.pnOffset, nil); ok {
		t.Fatal("a packet with a reserved bit set opens")
	}
	return p
}

// quicRFCFrames is the CRYPTO frame of the client Initial of RFC 9001 Appendix A.2
// (and RFC 9369 Appendix A.2), before its PADDING up to 1162 bytes.
const quicRFCFrames = `
060040f1010000ed0303ebf8fa56f12939b9584a3896472ec40bb863cfd3e868
04fe3a47f06a2b69484c00000413011302010000c000000010000e00000b6578
616d706c652e636f6dff01000100000a00080006001d00170018001000070005
04616c706e000500050100000000003300260024001d00209370b2c9caa47fba
baf4559fedba753de171fa71f50f1ce15d43e994ec74d748002b000302030400
0d0010000e0403050306030203080408050806002d00020101001c0002400100
3900320408ffffffffffffffff05048000ffff07048000ffff08011001048000
75300901100f088394c8f03e51570806048000ffff`

// quicRFC9001Packet is the protected client Initial of RFC 9001 Appendix A.2.
const quicRFC9001Packet = `
c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11
d242b123dc9bd8bab936b47d92ec356c0bab7df5976d27cd449f63300099f399
1c260ec4c60d17b31f8429157bb35a1282a643a8d2262cad67500cadb8e7378c
8eb7539ec4d4905fed1bee1fc8aafba17c750e2c7ace01e6005f80fcb7df6212
30c83711b39343fa028cea7f7fb5ff89eac2308249a02252155e2347b63d58c5
457afd84d05dfffdb20392844ae812154682e9cf012f9021a6f0be17ddd0c208
4dce25ff9b06cde535d0f920a2db1bf362c23e596d11a4f5a6cf3948838a3aec
4e15daf8500a6ef69ec4e3feb6b1d98e610ac8b7ec3faf6ad760b7bad1db4ba3
485e8a94dc250ae3fdb41ed15fb6a8e5eba0fc3dd60bc8e30c5c4287e53805db
059ae0648db2f64264ed5e39be2e20d82df566da8dd5998ccabdae053060ae6c
7b4378e846d29f37ed7b4ea9ec5d82e7961b7f25a9323851f681d582363aa5f8
9937f5a67258bf63ad6f1a0b1d96dbd4faddfcefc5266ba6611722395c906556
be52afe3f565636ad1b17d508b73d8743eeb524be22b3dcbc2c7468d54119c74
68449a13d8e3b95811a198f3491de3e7fe942b330407abf82a4ed7c1b311663a
c69890f4157015853d91e923037c227a33cdd5ec281ca3f79c44546b9d90ca00
f064c99e3dd97911d39fe9c5d0b23a229a234cb36186c4819e8b9c5927726632
291d6a418211cc2962e20fe47feb3edf330f2c603a9d48c0fcb5699dbfe58964
25c5bac4aee82e57a85aaf4e2513e4f05796b07ba2ee47d80506f8d2c25e50fd
14de71e6c418559302f939b0e1abd576f279c4b2e0feb85c1f28ff18f58891ff
ef132eef2fa09346aee33c28eb130ff28f5b766953334113211996d20011a198
e3fc433f9f2541010ae17c1bf202580f6047472fb36857fe843b19f5984009dd
c324044e847a4f4a0ab34f719595de37252d6235365e9b84392b061085349d73
203a4a13e96f5432ec0fd4a1ee65accdd5e3904df54c1da510b0ff20dcc0c77f
cb2c0e0eb605cb0504db87632cf3d8b4dae6e705769d1de354270123cb11450e
fc60ac47683d7b8d0f811365565fd98c4c8eb936bcab8d069fc33bd801b03ade
a2e1fbc5aa463d08ca19896d2bf59a071b851e6c239052172f296bfb5e724047
90a2181014f3b94a4e97d117b438130368cc39dbb2d198065ae3986547926cd2
162f40a29f0c3c8745c0f50fba3852e566d44575c29d39a03f0cda721984b6f4
40591f355e12d439ff150aab7613499dbd49adabc8676eef023b15b65bfc5ca0
6948109f23f350db82123535eb8a7433bdabcb909271a6ecbcb58b936a88cd4e
8f2e6ff5800175f113253d8fa9ca8885c2f552e657dc603f252e1a8e308f76f0
be79e2fb8f5d5fbbe2e30ecadd220723c8c0aea8078cdfcb3868263ff8f09400
54da48781893a7e49ad5aff4af300cd804a6b6279ab3ff3afb64491c85194aab
760d58a606654f9f4400e8b38591356fbf6425aca26dc85244259ff2b19c41b9
f96f3ca9ec1dde434da7d2d392b905ddf3d1f9af93d1af5950bd493f5aa731b4
056df31bd267b6b90a079831aaf579be0a39013137aac6d404f518cfd4684064
7e78bfe706ca4cf5e9c5453e9f7cfd2b8b4c8d169a44e55c88d4a9a7f9474241
e221af44860018ab0856972e194cd934`

// quicRFC9369Packet is the protected client Initial of RFC 9369 Appendix A.2.
const quicRFC9369Packet = `
d76b3343cf088394c8f03e5157080000449ea0c95e82ffe67b6abcdb4298b485
dd04de806071bf03dceebfa162e75d6c96058bdbfb127cdfcbf903388e99ad04
9f9a3dd4425ae4d0992cfff18ecf0fdb5a842d09747052f17ac2053d21f57c5d
250f2c4f0e0202b70785b7946e992e58a59ac52dea6774d4f03b55545243cf1a
12834e3f249a78d395e0d18f4d766004f1a2674802a747eaa901c3f10cda5500
cb9122faa9f1df66c392079a1b40f0de1c6054196a11cbea40afb6ef5253cd68
18f6625efce3b6def6ba7e4b37a40f7732e093daa7d52190935b8da58976ff33
12ae50b187c1433c0f028edcc4c2838b6a9bfc226ca4b4530e7a4ccee1bfa2a3
d396ae5a3fb512384b2fdd851f784a65e03f2c4fbe11a53c7777c023462239dd
6f7521a3f6c7d5dd3ec9b3f233773d4b46d23cc375eb198c63301c21801f6520
bcfb7966fc49b393f0061d974a2706df8c4a9449f11d7f3d2dcbb90c6b877045
636e7c0c0fe4eb0f697545460c806910d2c355f1d253bc9d2452aaa549e27a1f
ac7cf4ed77f322e8fa894b6a83810a34b361901751a6f5eb65a0326e07de7c12
16ccce2d0193f958bb3850a833f7ae432b65bc5a53975c155aa4bcb4f7b2c4e5
4df16efaf6ddea94e2c50b4cd1dfe06017e0e9d02900cffe1935e0491d77ffb4
fdf85290fdd893d577b1131a610ef6a5c32b2ee0293617a37cbb08b847741c3b
8017c25ca9052ca1079d8b78aebd47876d330a30f6a8c6d61dd1ab5589329de7
14d19d61370f8149748c72f132f0fc99f34d766c6938597040d8f9e2bb522ff9
9c63a344d6a2ae8aa8e51b7b90a4a806105fcbca31506c446151adfeceb51b91
abfe43960977c87471cf9ad4074d30e10d6a7f03c63bd5d4317f68ff325ba3bd
80bf4dc8b52a0ba031758022eb025cdd770b44d6d6cf0670f4e990b22347a7db
848265e3e5eb72dfe8299ad7481a408322cac55786e52f633b2fb6b614eaed18
d703dd84045a274ae8bfa73379661388d6991fe39b0d93debb41700b41f90a15
c4d526250235ddcd6776fc77bc97e7a417ebcb31600d01e57f32162a8560cacc
7e27a096d37a1a86952ec71bd89a3e9a30a2a26162984d7740f81193e8238e61
f6b5b984d4d3dfa033c1bb7e4f0037febf406d91c0dccf32acf423cfa1e70710
10d3f270121b493ce85054ef58bada42310138fe081adb04e2bd901f2f13458b
3d6758158197107c14ebb193230cd1157380aa79cae1374a7c1e5bbcb80ee23e
06ebfde206bfb0fcbc0edc4ebec309661bdd908d532eb0c6adc38b7ca7331dce
8dfce39ab71e7c32d318d136b6100671a1ae6a6600e3899f31f0eed19e3417d1
34b90c9058f8632c798d4490da4987307cba922d61c39805d072b589bd52fdf1
e86215c2d54e6670e07383a27bbffb5addf47d66aa85a0c6f9f32e59d85a44dd
5d3b22dc2be80919b490437ae4f36a0ae55edf1d0b5cb4e9a3ecabee93dfc6e3
8d209d0fa6536d27a5d6fbb17641cde27525d61093f1b28072d111b2b4ae5f89
d5974ee12e5cf7d5da4d6a31123041f33e61407e76cffcdcfd7e19ba58cf4b53
6f4c4938ae79324dc402894b44faf8afbab35282ab659d13c93f70412e85cb19
9a37ddec600545473cfb5a05e08d0b209973b2172b4d21fb69745a262ccde96b
a18b2faa745b6fe189cf772a9f84cbfc`

// FuzzQUIC splits its input into two datagrams at split: no panic, the
// datagrams are not modified, and the answers on the first datagram alone
// stand once the second arrives. Seeds: the RFC examples, the recorded
// flights (two datagrams at most) and a ClientHello split by the test's
// encoder.
func FuzzQUIC(f *testing.F) {
	f.Add(quicHex(quicRFC9001Packet), uint(1200))
	f.Add(quicHex(quicRFC9369Packet), uint(1200))
	for _, flight := range quicRecorded(f) {
		f.Add(slices.Concat(flight...), uint(len(flight[0])))
	}
	ch := quicChromiumHello(f)
	dcid := quicHex("0123456789abcdef")
	first := quicDatagram(f, quicV1, dcid, 0, quicCryptoFrame(ch, 0, 900))
	f.Add(slices.Concat(first, quicDatagram(f, quicV1, dcid, 1, quicCryptoFrame(ch, 900, len(ch)))), uint(len(first)))
	f.Fuzz(func(t *testing.T, data []byte, split uint) {
		orig := bytes.Clone(data)
		k := int(split % uint(len(data)+1))
		one, two := [][]byte{data[:k]}, [][]byte{data[:k], data[k:]}
		if d1, d2 := detectQUIC(one), detectQUIC(two); d1 != NeedMore && d1 != d2 {
			t.Fatalf("detect: %v on the first datagram, %v on both", d1, d2)
		}
		md1, ok1 := inspectQUIC(one)
		md2, ok2 := inspectQUIC(two)
		if ok1 && (!ok2 || !reflect.DeepEqual(md1, md2)) {
			t.Fatalf("inspect: %+v on the first datagram, %+v, %v on both", md1, md2, ok2)
		}
		if !bytes.Equal(data, orig) {
			t.Fatal("data modified")
		}
	})
}

// FuzzQUICPayload seals its input as the payload of a client Initial, so
// the frame parser and the reassembly see arbitrary plaintext.
func FuzzQUICPayload(f *testing.F) {
	ch := quicChromiumHello(f)
	f.Add(quicHex(quicRFCFrames))
	f.Add(slices.Concat([]byte{0x02, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01}, quicCryptoFrame(ch, 0, 700)))
	f.Add(slices.Concat(quicCryptoFrame(ch, 700, 1000), []byte{0x1c, 0x01, 0x00, 0x02, 'h', 'i'}))
	dcid := quicHex("0123456789abcdef")
	f.Fuzz(func(t *testing.T, payload []byte) {
		if len(payload) > 4000 {
			return
		}
		d := quicDatagram(t, quicV1, dcid, 0, payload)
		if got := detectQUIC([][]byte{d}); got != Match {
			t.Fatalf("detect = %v", got)
		}
		md, ok := inspectQUIC([][]byte{d})
		md2, ok2 := inspectQUIC([][]byte{d, d})
		if ok && (!ok2 || !reflect.DeepEqual(md, md2)) {
			t.Fatalf("inspect: %+v, then %+v, %v", md, md2, ok2)
		}
	})
}

// BenchmarkQUIC is the cost of identifying a new flow: the detector on its
// first datagram, the inspector on each of the two datagrams of a split
// ClientHello.
func BenchmarkQUIC(b *testing.B) {
	ch := quicChromiumHello(b)
	dcid := quicHex("0123456789abcdef")
	dgs := [][]byte{
		quicDatagram(b, quicV1, dcid, 0, quicCryptoFrame(ch, 0, 900)),
		quicDatagram(b, quicV1, dcid, 1, quicCryptoFrame(ch, 900, len(ch))),
	}
	b.Run("detect", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if detectQUIC(dgs[:1]) != Match {
				b.Fatal("no match")
			}
		}
	})
	b.Run("inspect", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := inspectQUIC(dgs[:1]); ok {
				b.Fatal("ok on half a ClientHello")
			}
			if md, ok := inspectQUIC(dgs); !ok || md.SNI != "a.example" {
				b.Fatal(md, ok)
			}
		}
	})
}
