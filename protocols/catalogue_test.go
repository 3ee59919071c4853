package protocols

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// detectorOf returns the detector of the built-in registered as name.
func detectorOf(t testing.TB, name string) DetectFunc {
	t.Helper()
	d, ok := Describe(name)
	if !ok {
		t.Fatalf("%s is not registered", name)
	}
	return d.New("x:1").Spec().Detect
}

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

func TestCatalogueTables(t *testing.T) {
	cases := []struct {
		proto string
		data  string
		want  Result
	}{
		{"mqtt", "\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00", Match},
		{"mqtt", "\x10\x25\x00\x06MQIsdp\x03\x02\x00\x3c", Match},
		{"mqtt", "\x10\x10\x00\x04MQTT\x05\x02\x00\x3c\x03", Match},
		{"mqtt", "\x10\x0c\x00\x04MQTT\x03\x02", NoMatch}, // MQTT with level 3
		{"mqtt", "\x10\x0c\x00\x04MQTT\x04\x03", NoMatch}, // reserved flag bit set
		{"mqtt", "\x10\xff\xff\xff\xff\x01", NoMatch},     // 5-byte remaining length
		{"mqtt", "\x10\x0c\x00\x04MQTX", NoMatch},
		{"mqtt", "\x20\x02\x00\x00", NoMatch}, // CONNACK is not a client's first packet
		{"socks5", "\x05\x02\x00\x01", Match},
		{"socks5", "\x05\x01\x02", Match},
		{"socks5", "\x05\x00", NoMatch},
		{"socks5", "\x05\x02\x00\x42", NoMatch}, // unassigned method
		{"socks5", "\x05\x03\x00", NeedMore},
		{"socks4", "\x04\x01\x00\x50\x7f\x00\x00\x02\x00", Match},
		{"socks4", "\x04\x01\x00\x50\x00\x00\x00\x01user\x00www.example.test\x00", Match},
		{"socks4", "\x04\x01\x00\x50\x00\x00\x00\x01\x00www.exam", NeedMore},
		{"socks4", "\x04\x03\x00\x50", NoMatch},
		{"socks4", "\x04\x01\x00\x50\x7f\x00\x00\x02us\x01", NoMatch}, // control byte in user id
		{"postgresql", "\x00\x00\x00\x08\x04\xd2\x16\x2f", Match},
		{"postgresql", "\x00\x00\x00\x08\x04\xd2\x16\x30", Match}, // GSSENCRequest
		{"postgresql", "\x00\x00\x00\x10\x04\xd2\x16\x2e", Match}, // CancelRequest
		{"postgresql", "\x00\x00\x00\x35\x00\x03\x00\x00user", Match},
		{"postgresql", "\x00\x00\x00\x09\x04\xd2\x16\x2f", NoMatch},
		{"postgresql", "\x00\x01\x00\x35\x00\x03\x00\x00", NoMatch},
		{"postgresql", "\x00\x00\x00\x35\x00\x02\x00\x00", NoMatch}, // protocol 2.0
		{"smtp", "EHLO client.test\r\n", Match},
		{"smtp", "helo x\r\n", Match},
		{"smtp", "EHL", NeedMore},
		{"smtp", "EHLX", NoMatch},
		// dig +tcp example.test A (RFC 1035 §4.2.2 framing)
		{"dns", "\x00\x35\x62\xd1\x01\x20\x00\x01\x00\x00\x00\x00\x00\x01\x07example\x04test\x00\x00\x01\x00\x01", Match},
		{"dns", "\x00\x1d\x62\xd1\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00", NoMatch},     // a response (QR=1)
		{"dns", "\x00\x1d\x62\xd1\x01\x20\x00\x00\x00\x00\x00\x00\x00\x00", NoMatch},     // no question
		{"dns", "\x00\x11\x62\xd1\x01\x20\x00\x01\x00\x00\x00\x00\x00\x00\x40", NoMatch}, // label of 64
		// STUN Binding request over TCP (RFC 8489): type 0x0001, length 0, cookie, transaction id
		{"stun", "\x00\x01\x00\x00\x21\x12\xa4\x42abcdefghijkl", Match},
		{"stun", "\x00\x01\x00\x08\x21\x12\xa4\x43", NoMatch},
		{"stun", "\x00\x01\x00\x03", NoMatch},
		{"sip", "OPTIONS sip:user@example.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1\r\n", Match},
		{"sip", "INVITE sips:bob@example.test SIP/2.0\r\n", Match},
		{"sip", "OPTIONS rtsp://x/ RTSP/1.0\r\n", NoMatch},
		{"sip", "GET / HTTP/1.1\r\n", NoMatch},
		{"rtsp", "OPTIONS rtsp://127.0.0.1:8554/stream RTSP/1.0\r\nCSeq: 1\r\n", Match},
		{"rtsp", "DESCRIBE rtsp://x/s RTSP/1.0\r\n", Match},
		{"rtsp", "OPTIONS * HTTP/1.1\r\n", NoMatch},
		// mstsc/xfreerdp Connection Request: TPKT len 19, X.224 CR with an RDP negotiation request
		{"rdp", "\x03\x00\x00\x13\x0e\xe0\x00\x00\x00\x00\x00\x01\x00\x08\x00\x03\x00\x00\x00", Match},
		{"rdp", "\x03\x00\x00\x13\x0e\xd0", NoMatch}, // a connection confirm is the server's
		{"rdp", "\x03\x00\x00\x00\x00\x00", NoMatch}, // RTMP C1 with time 0
		{"rtmp", rtmpC0C1(), Match},
		{"rtmp", "\x03\x00\x00\x13\x0e\xe0\x00\x00", NoMatch}, // that is RDP
		{"rtmp", "\x03\x00\x00\x00", NeedMore},
		// P_CONTROL_HARD_RESET_CLIENT_V2, no tls-auth: op, session id, ack len, packet id
		{"openvpn", "\x00\x0e\x38\x01\x02\x03\x04\x05\x06\x07\x08\x00\x00\x00\x00\x00", Match},
		{"openvpn", "\x00\x0e\x50\x01\x02\x03\x04\x05\x06\x07\x08\x00\x00\x00\x00\x00", Match}, // V3
		{"openvpn", "\x00\x0e\x39", NoMatch},                                                   // key id 1
		{"openvpn", "\x00\x08\x04\xd2\x16\x2f", NoMatch},                                       // too short: PostgreSQL-like
	}
	for _, c := range cases {
		checkDetector(t, c.proto+" "+strings.TrimSpace(c.data[:min(len(c.data), 12)]), detectorOf(t, c.proto), []byte(c.data), c.want)
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
