package protocols

import (
	"os"
	"path/filepath"
	"testing"
)

// rtmpC0C1 is a C0 + C1 as ffmpeg sends it: version 3, time 0, a non-zero
// version field, then 1528 filler bytes.
func rtmpC0C1() string {
	b := make([]byte, rtmpHandshake)
	b[0] = 3
	copy(b[5:9], []byte{9, 0, 124, 2})
	for i := 9; i < len(b); i++ {
		b[i] = byte(i * 7)
	}
	return string(b)
}

// TestCatalogueTables: first flights and near misses for the built-ins
// whose detectors have no test file of their own, each checked on every
// prefix (checkDetector) with the registry's detector for the YAML name.
func TestCatalogueTables(t *testing.T) {
	cases := []struct {
		proto, name, data string
		want              Result
	}{
		{"mqtt", "3.1.1 CONNECT", "\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00", Match},
		{"mqtt", "3.1 CONNECT (MQIsdp)", "\x10\x25\x00\x06MQIsdp\x03\x02\x00\x3c", Match},
		{"mqtt", "5 CONNECT", "\x10\x10\x00\x04MQTT\x05\x02\x00\x3c\x03", Match},
		{"mqtt", "MQTT with level 3", "\x10\x0c\x00\x04MQTT\x03\x02", NoMatch},
		{"mqtt", "reserved flag bit set", "\x10\x0c\x00\x04MQTT\x04\x03", NoMatch},
		{"mqtt", "5-byte remaining length", "\x10\xff\xff\xff\xff\x01", NoMatch},
		{"mqtt", "wrong protocol name", "\x10\x0c\x00\x04MQTX", NoMatch},
		{"mqtt", "CONNACK is not a client's first packet", "\x20\x02\x00\x00", NoMatch},
		{"socks5", "two methods", "\x05\x02\x00\x01", Match},
		{"socks5", "one method", "\x05\x01\x02", Match},
		{"socks5", "no methods", "\x05\x00", NoMatch},
		{"socks5", "unassigned method", "\x05\x02\x00\x42", NoMatch},
		{"socks5", "methods missing", "\x05\x03\x00", NeedMore},
		{"socks4", "SOCKS4 CONNECT", "\x04\x01\x00\x50\x7f\x00\x00\x02\x00", Match},
		{"socks4", "SOCKS4a with user id and host", "\x04\x01\x00\x50\x00\x00\x00\x01user\x00www.example.test\x00", Match},
		{"socks4", "SOCKS4a host not terminated", "\x04\x01\x00\x50\x00\x00\x00\x01\x00www.exam", NeedMore},
		{"socks4", "unknown command", "\x04\x03\x00\x50", NoMatch},
		{"socks4", "control byte in user id", "\x04\x01\x00\x50\x7f\x00\x00\x02us\x01", NoMatch},
		{"socks", "SOCKS4 CONNECT", "\x04\x01\x00\x50\x7f\x00\x00\x02\x00", Match},
		{"socks", "SOCKS5 greeting", "\x05\x01\x00", Match},
		{"socks", "SOCKS5 without methods", "\x05\x00", NoMatch},
		{"socks", "SOCKS4 unknown command", "\x04\x03\x00\x50", NoMatch},
		{"socks", "neither", "\x06\x01\x00", NoMatch},
		{"socks", "empty", "", NeedMore},
		{"postgresql", "SSLRequest", "\x00\x00\x00\x08\x04\xd2\x16\x2f", Match},
		{"postgresql", "GSSENCRequest", "\x00\x00\x00\x08\x04\xd2\x16\x30", Match},
		{"postgresql", "CancelRequest", "\x00\x00\x00\x10\x04\xd2\x16\x2e", Match},
		{"postgresql", "StartupMessage 3.0", "\x00\x00\x00\x35\x00\x03\x00\x00user", Match},
		{"postgresql", "SSLRequest with a wrong length", "\x00\x00\x00\x09\x04\xd2\x16\x2f", NoMatch},
		{"postgresql", "length over 10000", "\x00\x01\x00\x35\x00\x03\x00\x00", NoMatch},
		{"postgresql", "protocol 2.0", "\x00\x00\x00\x35\x00\x02\x00\x00", NoMatch},
		{"smtp", "EHLO", "EHLO client.test\r\n", Match},
		{"smtp", "helo in lower case", "helo x\r\n", Match},
		{"smtp", "verb prefix", "EHL", NeedMore},
		{"smtp", "other verb", "EHLX", NoMatch},
		// dig +tcp example.test A (RFC 1035 §4.2.2 framing)
		{"dns", "A query", "\x00\x35\x62\xd1\x01\x20\x00\x01\x00\x00\x00\x00\x00\x01\x07example\x04test\x00\x00\x01\x00\x01", Match},
		{"dns", "a response (QR=1)", "\x00\x1d\x62\xd1\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00", NoMatch},
		{"dns", "no question", "\x00\x1d\x62\xd1\x01\x20\x00\x00\x00\x00\x00\x00\x00\x00", NoMatch},
		{"dns", "label of 64", "\x00\x11\x62\xd1\x01\x20\x00\x01\x00\x00\x00\x00\x00\x00\x40", NoMatch},
		// STUN Binding request over TCP (RFC 8489): type 0x0001, length 0, cookie, transaction id
		{"stun", "Binding request", "\x00\x01\x00\x00\x21\x12\xa4\x42abcdefghijkl", Match},
		{"stun", "wrong magic cookie", "\x00\x01\x00\x08\x21\x12\xa4\x43", NoMatch},
		{"stun", "length not a multiple of 4", "\x00\x01\x00\x03", NoMatch},
		{"sip", "OPTIONS", "OPTIONS sip:user@example.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1\r\n", Match},
		{"sip", "INVITE sips:", "INVITE sips:bob@example.test SIP/2.0\r\n", Match},
		{"sip", "RTSP request", "OPTIONS rtsp://x/ RTSP/1.0\r\n", NoMatch},
		{"sip", "HTTP request", "GET / HTTP/1.1\r\n", NoMatch},
		{"rtsp", "OPTIONS", "OPTIONS rtsp://127.0.0.1:8554/stream RTSP/1.0\r\nCSeq: 1\r\n", Match},
		{"rtsp", "DESCRIBE", "DESCRIBE rtsp://x/s RTSP/1.0\r\n", Match},
		{"rtsp", "HTTP version", "OPTIONS * HTTP/1.1\r\n", NoMatch},
		// mstsc/xfreerdp Connection Request: TPKT len 19, X.224 CR with an RDP negotiation request
		{"rdp", "Connection Request", "\x03\x00\x00\x13\x0e\xe0\x00\x00\x00\x00\x00\x01\x00\x08\x00\x03\x00\x00\x00", Match},
		{"rdp", "a connection confirm is the server's", "\x03\x00\x00\x13\x0e\xd0", NoMatch},
		{"rdp", "RTMP C1 with time 0", "\x03\x00\x00\x00\x00\x00", NoMatch},
		{"rtmp", "C0 and C1", rtmpC0C1(), Match},
		{"rtmp", "that is RDP", "\x03\x00\x00\x13\x0e\xe0\x00\x00", NoMatch},
		{"rtmp", "C1 incomplete", "\x03\x00\x00\x00", NeedMore},
		// P_CONTROL_HARD_RESET_CLIENT_V2, no tls-auth: op, session id, ack len, packet id
		{"openvpn", "V2", "\x00\x0e\x38\x01\x02\x03\x04\x05\x06\x07\x08\x00\x00\x00\x00\x00", Match},
		{"openvpn", "V3", "\x00\x0e\x50\x01\x02\x03\x04\x05\x06\x07\x08\x00\x00\x00\x00\x00", Match},
		{"openvpn", "key id 1", "\x00\x0e\x39", NoMatch},
		{"openvpn", "too short: PostgreSQL-like", "\x00\x08\x04\xd2\x16\x2f", NoMatch},
	}
	for _, c := range cases {
		checkDetector(t, c.proto+": "+c.name, detectorOf(t, c.proto), []byte(c.data), c.want)
	}
	if !NewSMTPProtocol("x:1").ServerFirst() {
		t.Fatal("SMTP is server-first")
	}
}

// FuzzCatalogue: every built-in detector decides a buffer's prefixes as it
// decides the whole buffer (a decision, once made, never changes).
func FuzzCatalogue(f *testing.F) {
	files, _ := filepath.Glob("testdata/flights/*.bin")
	for _, file := range files {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	ds := Descriptors()
	detectors := make([]DetectFunc, len(ds))
	for i, d := range ds {
		detectors[i] = d.New("x:1").Spec().Detect
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for i, detect := range detectors {
			name := ds[i].Name
			whole := detect(data)
			for k := 0; k <= len(data); k++ {
				if r := detect(data[:k]); r != NeedMore {
					if r != whole {
						t.Fatalf("%s: prefix %d says %v, whole says %v", name, k, r, whole)
					}
					break
				}
			}
		}
	})
}
