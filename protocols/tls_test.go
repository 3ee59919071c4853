package protocols

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"testing"
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

func TestTLSDetect(t *testing.T) {
	hello := tlsTestRecords(tlsTestHello("example.com", []string{"h2", "http/1.1"}, 0, 0), tlsMaxRecord)
	tiny := tlsTestRecords(tlsTestHello("a.example", nil, 0, 0), 1) // one handshake byte per record
	small := tlsTestRecords(tlsTestHello("a.example", nil, 0, 0), 3)
	runDetectCases(t, detectTLS, []detectCase{
		{"client hello", string(hello), Match},
		{"header only", string(hello[:11]), Match},
		{"one byte records", string(tiny), Match},
		{"three byte records", string(small), Match},
		{"ssl3 record", "\x16\x03\x00\x00\x40\x01\x00\x00\x3c\x03\x00", Match},
		{"tls13 record version", "\x16\x03\x04\x00\x40\x01\x00\x00\x3c\x03\x03", Match},
		{"record prefix", string(hello[:5]), NeedMore},
		{"handshake prefix", string(hello[:9]), NeedMore},
		{"one byte", "\x16", NeedMore},
		{"alert", "\x15\x03\x01\x00\x02\x02\x28", NoMatch},
		{"application data", "\x17\x03\x03\x00\x10", NoMatch},
		{"bad major", "\x16\x02\x01", NoMatch},
		{"bad minor", "\x16\x03\x05", NoMatch},
		{"empty record", "\x16\x03\x01\x00\x00", NoMatch},
		{"record too long", "\x16\x03\x01\x40\x01", NoMatch},
		{"server hello", "\x16\x03\x03\x00\x40\x02\x00\x00\x3c\x03\x03", NoMatch},
		{"hello too short", "\x16\x03\x01\x00\x40\x01\x00\x00\x10", NoMatch},
		{"bad client version", "\x16\x03\x01\x00\x40\x01\x00\x00\x3c\x02\x00", NoMatch},
		{"bad client minor", "\x16\x03\x01\x00\x40\x01\x00\x00\x3c\x03\x05", NoMatch},
		{"next record not handshake", "\x16\x03\x01\x00\x02\x01\x00\x17\x03\x03", NoMatch},
		{"sslv2 compat", "\x80\x2e\x01\x03\x01\x00\x15\x00\x00\x00\x10", NoMatch},
		{"http", "GET / HTTP/1.1\r\n", NoMatch},
	})
	if p := NewTLSProtocol("x:443"); p.Name != "TLS" || string(p.FirstBytes) != "\x16" || p.Inspect == nil {
		t.Fatalf("unexpected protocol %+v", p)
	}
}

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

	cases := []struct {
		name string
		data []byte
		want Metadata
	}{
		{"no sni", tlsTestRecords(tlsTestHello("", []string{"h2"}, 0, 0), tlsMaxRecord), Metadata{ALPN: []string{"h2"}}},
		{"no alpn", tlsTestRecords(tlsTestHello("a.b", nil, 0, 0), tlsMaxRecord), Metadata{SNI: "a.b"}},
		{"not tls", []byte("GET / HTTP/1.1\r\n"), Metadata{}},
		{"server hello", []byte("\x16\x03\x03\x00\x40\x02\x00\x00\x3c"), Metadata{}},
	}
	for _, c := range cases {
		md, ok := inspectTLS(c.data)
		if !ok || !reflect.DeepEqual(md, c.want) {
			t.Errorf("%s: inspect = %+v, %v; want %+v", c.name, md, ok, c.want)
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

func TestTLSFlights(t *testing.T) {
	both := []string{"h2", "http/1.1"}
	for name, want := range map[string]Metadata{
		"tls-openssl-sni.bin":   {SNI: "example.com", ALPN: both},
		"tls-openssl-nosni.bin": {},
		"tls-curl.bin":          {SNI: "example.test", ALPN: both},
		"tls-go.bin":            {SNI: "go.example.test", ALPN: both},
	} {
		data := coreFlight(t, name)
		md, ok := inspectTLS(data)
		if !ok || !reflect.DeepEqual(md, want) {
			t.Errorf("%s: inspect = %+v, %v; want %+v", name, md, ok, want)
		}
		checkInspectMonotonic(t, name, inspectTLS, data)
		// The same ClientHello re-fragmented into small records.
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
	b.Run("curl", func(b *testing.B) { benchDetect(b, detectTLS, coreFlight(b, "tls-curl.bin"), Match) })
	b.Run("records", func(b *testing.B) {
		benchDetect(b, detectTLS, tlsTestRecords(tlsTestHello("a.example", nil, 0, 0), 2), Match)
	})
}

func BenchmarkInspectTLS(b *testing.B) {
	for _, c := range []struct {
		name string
		data []byte
	}{
		{"go", coreFlight(b, "tls-go.bin")},
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
