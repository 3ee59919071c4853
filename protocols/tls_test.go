package protocols

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"testing"

	"github.com/darkit/protoplex/internal/testnet"
)

// tlsTestHello builds a ClientHello handshake message (header included) by
// hand from RFC 8446 §4.1.2, with optional SNI, ALPN and a padding extension
// (RFC 7685) of pad bytes; extraSuites adds that many cipher suites.
func tlsTestHello(sni string, alpn []string, pad, extraSuites int) []byte {
	u16 := func(b []byte, v int) []byte { return binary.BigEndian.AppendUint16(b, uint16(v)) }
	var exts []byte
	if sni != "" {
		var list []byte
		list = append(list, 0) // host_name
		list = u16(list, len(sni))
		list = append(list, sni...)
		exts = u16(exts, tlsExtServerName)
		exts = u16(exts, len(list)+2)
		exts = u16(exts, len(list))
		exts = append(exts, list...)
	}
	if len(alpn) > 0 {
		var list []byte
		for _, p := range alpn {
			list = append(list, byte(len(p)))
			list = append(list, p...)
		}
		exts = u16(exts, tlsExtALPN)
		exts = u16(exts, len(list)+2)
		exts = u16(exts, len(list))
		exts = append(exts, list...)
	}
	// supported_versions: TLS 1.3, 1.2
	exts = append(exts, 0x00, 0x2b, 0x00, 0x05, 0x04, 0x03, 0x04, 0x03, 0x03)
	if pad > 0 {
		exts = u16(exts, 21)
		exts = u16(exts, pad)
		exts = append(exts, make([]byte, pad)...)
	}
	body := []byte{0x03, 0x03}                             // legacy_version TLS 1.2
	body = append(body, bytes.Repeat([]byte{0xAB}, 32)...) // random
	body = append(body, 32)                                // session id
	body = append(body, bytes.Repeat([]byte{0xCD}, 32)...)
	body = u16(body, 4+2*extraSuites) // cipher suites
	body = append(body, 0x13, 0x01, 0xc0, 0x2f)
	body = append(body, bytes.Repeat([]byte{0x00, 0x0a}, extraSuites)...)
	body = append(body, 0x01, 0x00) // compression: null
	body = u16(body, len(exts))
	body = append(body, exts...)
	msg := []byte{tlsClientHello, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}
	return append(msg, body...)
}

// tlsTestRecords wraps a handshake message in handshake records of at most
// size bytes each (record version TLS 1.0, as clients send).
func tlsTestRecords(msg []byte, size int) []byte {
	var out []byte
	for len(msg) > 0 {
		n := min(size, len(msg))
		out = append(out, tlsHandshake, 3, 1, byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

// TestTLSInspect: a ClientHello split into records of any size gives the
// same metadata, and none before it is complete.
func TestTLSInspect(t *testing.T) {
	msg := tlsTestHello("WWW.Example.COM.", []string{"h2", "http/1.1"}, 300, 0)
	want := Metadata{SNI: "www.example.com", ALPN: []string{"h2", "http/1.1"}}
	for _, size := range []int{tlsMaxRecord, 100, 7, 1} {
		data := tlsTestRecords(msg, size)
		data = append(data, 0x14, 0x03, 0x03, 0x00, 0x01, 0x01) // a following record
		md, ok := inspectTLS(data)
		if !ok || !reflect.DeepEqual(md, want) {
			t.Fatalf("records of %d: inspect = %+v, %v; want %+v", size, md, ok, want)
		}
		checkInspectMonotonic(t, "tls", inspectTLS, data)
		// Incomplete ClientHello: not decided yet, whatever the split.
		for _, cut := range []int{0, 5, 9, len(data) - 7} {
			if md, ok := inspectTLS(data[:cut]); ok {
				t.Fatalf("records of %d, %d bytes: inspect = %+v, ok", size, cut, md)
			}
		}
	}

}

func TestTLSInspectLarge(t *testing.T) {
	// A ClientHello over the bound (only a huge cipher suite list can make
	// one): the extensions within its first tlsMaxClientHello bytes count,
	// and the answer comes without waiting for the rest.
	msg := tlsTestHello("big.example", []string{"h2"}, 20000, 25000)
	if len(msg) <= tlsMaxClientHello+4 {
		t.Fatalf("test hello only %d bytes", len(msg))
	}
	data := tlsTestRecords(msg, tlsMaxRecord)
	bound := 0
	for i := len(data) - 20000; i <= len(data); i++ {
		if _, ok := inspectTLS(data[:i]); ok {
			bound = i
			break
		}
	}
	if bound == 0 || bound >= len(data) {
		t.Fatalf("large hello decided at %d of %d bytes", bound, len(data))
	}
	want := Metadata{SNI: "big.example", ALPN: []string{"h2"}}
	for _, d := range [][]byte{data[:bound], data} {
		if md, ok := inspectTLS(d); !ok || !reflect.DeepEqual(md, want) {
			t.Fatalf("large hello, %d bytes: %+v, %v", len(d), md, ok)
		}
	}
	if _, ok := inspectTLS(data[:bound-1]); ok {
		t.Fatalf("decided before the bound")
	}
	if got := detectTLS(data); got != Match {
		t.Fatalf("detect large hello: %v", got)
	}
}

func TestTLSParseMalformed(t *testing.T) {
	msg := tlsTestHello("x.example", []string{"h2"}, 0, 0)
	body := msg[4:]
	// Every truncation of a complete message's body must parse without
	// panicking and never invent a name.
	for i := range body {
		md := tlsParseClientHello(body[:i], false)
		if md.SNI != "" && md.SNI != "x.example" {
			t.Fatalf("truncated at %d: %+v", i, md)
		}
		_ = tlsParseClientHello(body[:i], true)
	}
	// A corrupted server_name list length hides the name, not the ALPN.
	bad := append([]byte(nil), body...)
	i := bytes.Index(bad, []byte("x.example"))
	bad[i-5]++ // server_name_list length
	if md := tlsParseClientHello(bad, false); md.SNI != "" || !reflect.DeepEqual(md.ALPN, []string{"h2"}) {
		t.Fatalf("corrupted sni: %+v", md)
	}
}

// TestTLSFlightsInRecords: each recorded ClientHello, re-fragmented into
// small records, is detected and gives the metadata it gives whole.
func TestTLSFlightsInRecords(t *testing.T) {
	for name, data := range testnet.Flights(t, "tls-") {
		want, ok := inspectTLS(data)
		if !ok {
			t.Fatalf("%s: inspect undecided on the whole flight", name)
		}
		msgLen := int(data[3])<<8 | int(data[4])
		split := tlsTestRecords(data[5:5+msgLen], 50)
		checkDetector(t, name+" in records", detectTLS, split, Match)
		if md, ok := inspectTLS(split); !ok || !reflect.DeepEqual(md, want) {
			t.Errorf("%s in records: inspect = %+v, %v; want %+v", name, md, ok, want)
		}
		checkInspectMonotonic(t, name+" in records", inspectTLS, split)
	}
}

func FuzzTLS(f *testing.F) {
	seeds := fuzzSeeds(f, []string{"tls-"})
	seeds = append(seeds,
		tlsTestRecords(tlsTestHello("a.example", []string{"h2"}, 10, 0), 30),
		tlsTestRecords(tlsTestHello("b.example", nil, 0, 3), 1))
	fuzzCore(f, detectTLS, inspectTLS, seeds...)
}

func BenchmarkDetectTLS(b *testing.B) {
	b.Run("curl", func(b *testing.B) { benchDetect(b, detectTLS, testnet.Flight(b, "tls-curl.bin"), Match) })
	b.Run("records", func(b *testing.B) {
		benchDetect(b, detectTLS, tlsTestRecords(tlsTestHello("a.example", nil, 0, 0), 2), Match)
	})
}

func BenchmarkInspectTLS(b *testing.B) {
	for _, c := range []struct {
		name string
		data []byte
	}{
		{"go", testnet.Flight(b, "tls-go.bin")},
		{"records", tlsTestRecords(tlsTestHello("a.example", []string{"h2"}, 300, 0), 100)},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.data)))
			for b.Loop() {
				if md, ok := inspectTLS(c.data); !ok || md.SNI == "" {
					b.Fatalf("inspect = %+v, %v", md, ok)
				}
			}
		})
	}
}
