package protocols

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"strings"
	"testing"

	"github.com/darkit/protoplex/internal/testnet"
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

// catalogueCase is a first flight, whole or in part, and the verdict the
// detector of the built-in registered as proto gives it.
type catalogueCase struct {
	proto, name, data string
	want              Result
}

// dnsPaddedQuery is a DNS-over-TCP query for example.test A of total bytes
// (length prefix included) as dig +tcp +padding sends it: one question and
// an OPT record whose padding option (RFC 7830) fills the message.
func dnsPaddedQuery(total int) string {
	head := "\x62\xd1\x01\x20\x00\x01\x00\x00\x00\x00\x00\x01" + // ID, RD+AD, QD=1, AR=1
		"\x07example\x04test\x00\x00\x01\x00\x01" + // example.test A IN
		"\x00\x00\x29\x10\x00\x00\x00\x00\x00" // OPT: root, type 41, 4096-byte payload, TTL 0
	pad := total - 2 - len(head) - 2 - 4 // RDLENGTH, then the option's code and length
	msg := head + string(binary.BigEndian.AppendUint16(nil, uint16(4+pad))) +
		"\x00\x0c" + string(binary.BigEndian.AppendUint16(nil, uint16(pad))) + strings.Repeat("\x00", pad)
	return string(binary.BigEndian.AppendUint16(nil, uint16(len(msg)))) + msg
}

// catalogueCases are first flights and near misses for every built-in
// (FTP, whose detector rejects everything, has its own test): valid ones,
// their beginnings, and the nearest things that are not the protocol,
// other protocols' first flights among them.
func catalogueCases() []catalogueCase {
	long := "GET /" + strings.Repeat("a", httpMaxRequestLine) + " HTTP/1.1\r\n"
	settings := "\x00\x00\x00\x04\x00\x00\x00\x00\x00" // an empty SETTINGS frame, sent after the preface
	hello := tlsTestRecords(tlsTestHello("example.com", []string{"h2", "http/1.1"}, 0, 0), tlsMaxRecord)
	tiny := tlsTestRecords(tlsTestHello("a.example", nil, 0, 0), 1) // one handshake byte per record
	small := tlsTestRecords(tlsTestHello("a.example", nil, 0, 0), 3)
	return []catalogueCase{
		{"http", "get 1.1", "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", Match},
		{"http", "line only", "GET /index.html HTTP/1.1\r\n", Match},
		{"http", "get 1.0 lf", "GET / HTTP/1.0\n", Match},
		{"http", "head", "HEAD /x?y=1 HTTP/1.1\r\n", Match},
		{"http", "post", "POST /api HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", Match},
		{"http", "put", "PUT /f HTTP/1.1\r\n", Match},
		{"http", "delete", "DELETE /f HTTP/1.1\r\n", Match},
		{"http", "options star", "OPTIONS * HTTP/1.1\r\n", Match},
		{"http", "trace", "TRACE / HTTP/1.1\r\n", Match},
		{"http", "connect", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", Match},
		{"http", "patch", "PATCH /r HTTP/1.1\r\n", Match},
		{"http", "absolute form", "GET http://example.com/ HTTP/1.1\r\n", Match},
		{"http", "utf8 path", "GET /caf\xc3\xa9 HTTP/1.1\r\n", Match},
		{"http", "propfind", "PROPFIND /dav/ HTTP/1.1\r\nDepth: 1\r\n\r\n", Match},
		{"http", "mkcalendar", "MKCALENDAR /cal/ HTTP/1.1\r\n", Match},
		{"http", "version-control", "VERSION-CONTROL /x HTTP/1.1\r\n", Match},
		{"http", "no headers yet", "GET / HTTP/1.1\r", NeedMore},
		{"http", "partial method", "GE", NeedMore},
		{"http", "partial version", "GET / HTT", NeedMore},
		{"http", "partial target", "GET /abc", NeedMore},
		{"http", "empty", "", NeedMore},
		{"http", "h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", NoMatch},
		{"http", "lower-case method", "get / HTTP/1.1\r\n", NoMatch},
		{"http", "unknown method", "FETCH / HTTP/1.1\r\n", NoMatch},
		{"http", "method too long", "PROPFINDPROPFINDPROPFIND / HTTP/1.1\r\n", NoMatch},
		{"http", "http 0.9", "GET /\r\n", NoMatch},
		{"http", "http 2.0 line", "GET / HTTP/2.0\r\n", NoMatch},
		{"http", "http 1.2", "GET / HTTP/1.2\r\n", NoMatch},
		{"http", "lower version", "GET / http/1.1\r\n", NoMatch},
		{"http", "double space", "GET  / HTTP/1.1\r\n", NoMatch},
		{"http", "space in target", "GET /a b HTTP/1.1\r\n", NoMatch},
		{"http", "control in target", "GET /a\x01 HTTP/1.1\r\n", NoMatch},
		{"http", "bad target start", "GET ?x HTTP/1.1\r\n", NoMatch},
		{"http", "cr without lf", "GET / HTTP/1.1\rX", NoMatch},
		{"http", "trailing junk", "GET / HTTP/1.1 \r\n", NoMatch},
		{"http", "rtsp", "OPTIONS rtsp://example.com/media RTSP/1.0\r\nCSeq: 1\r\n\r\n", NoMatch},
		{"http", "sip", "OPTIONS sip:bob@example.com SIP/2.0\r\n", NoMatch},
		{"http", "redis inline get", "GET key\r\n", NoMatch},
		{"http", "too long", long, NoMatch},
		{"http", "binary", "\x16\x03\x01\x02\x00\x01", NoMatch},
		{"http2", "preface", h2Preface, Match},
		{"http2", "preface settings", h2Preface + settings, Match},
		{"http2", "prefix", "PRI * HTTP/2.0\r\n", NeedMore},
		{"http2", "one byte", "P", NeedMore},
		{"http2", "http1 post", "POST / HTTP/1.1\r\n", NoMatch},
		{"http2", "bad tail", "PRI * HTTP/2.0\r\n\r\nSX\r\n\r\n", NoMatch},
		{"http2", "http 1.1 pri", "PRI * HTTP/1.1\r\n\r\n", NoMatch},
		{"ssh", "openssh", "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", Match},
		{"ssh", "bare prefix", "SSH-2.0-", Match},
		{"ssh", "1.99", "SSH-1.99-Cisco-1.25\r\n", Match},
		{"ssh", "putty", "SSH-2.0-PuTTY_Release_0.78\r\n", Match},
		{"ssh", "prefix", "SSH-2.", NeedMore},
		{"ssh", "prefix 1", "SSH-1", NeedMore},
		{"ssh", "empty", "", NeedMore},
		{"ssh", "ssh1 only", "SSH-1.5-old\r\n", NoMatch},
		{"ssh", "lower", "ssh-2.0-x\r\n", NoMatch},
		{"ssh", "select", "SELECT 1\r\n", NoMatch},
		{"ssh", "http", "GET / HTTP/1.1\r\n", NoMatch},
		{"redis", "resp ping", "*1\r\n$4\r\nPING\r\n", Match},
		{"redis", "resp header only", "*1\r\n$4\r\n", Match},
		{"redis", "resp hello", "*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n", Match},
		{"redis", "resp 1024", "*1024\r\n$3\r\nDEL\r\n", Match},
		{"redis", "resp prefix", "*3\r\n$3", NeedMore},
		{"redis", "resp cr", "*3\r", NeedMore},
		{"redis", "star", "*", NeedMore},
		{"redis", "resp zero args", "*0\r\n", NoMatch},
		{"redis", "resp leading zero", "*01\r\n$4\r\n", NoMatch},
		{"redis", "resp too many", "*1025\r\n", NoMatch},
		{"redis", "resp no bulk", "*1\r\n:1\r\n", NoMatch},
		{"redis", "resp bulk zero", "*1\r\n$0\r\n", NoMatch},
		{"redis", "resp bulk negative", "*1\r\n$-1\r\n", NoMatch},
		{"redis", "resp bulk too long", "*1\r\n$1025\r\n", NoMatch},
		{"redis", "resp lf only", "*1\n", NoMatch},
		{"redis", "resp cr junk", "*1\rx", NoMatch},
		{"redis", "resp no digits", "*\r\n", NoMatch},
		{"redis", "inline ping", "PING\r\n", Match},
		{"redis", "inline ping lf", "ping\n", Match},
		{"redis", "inline auth", "AUTH secret\r\n", Match},
		{"redis", "inline mixed case", "sElEcT 2\r\n", Match},
		{"redis", "inline get key", "GET key\r\n", Match},
		{"redis", "inline set", "SET k \"v w\"\r\n", Match},
		{"redis", "inline tab", "INFO\tserver\r\n", Match},
		{"redis", "inline partial", "PIN", NeedMore},
		{"redis", "inline line open", "PING", NeedMore},
		{"redis", "inline args open", "SET key val", NeedMore},
		{"redis", "inline cr", "PING\r", NeedMore},
		{"redis", "unknown command", "PONG\r\n", NoMatch},
		{"redis", "command prefix only", "PINGX\r\n", NoMatch},
		{"redis", "underscore", "GET_PARAMETER rtsp://x RTSP/1.0\r\n", NoMatch},
		{"redis", "http get", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", NoMatch},
		{"redis", "http get lower", "get /index.html HTTP/1.0\r\n", NoMatch},
		{"redis", "sip info", "INFO sip:bob@example.com SIP/2.0\r\n", NoMatch},
		{"redis", "sip subscribe", "SUBSCRIBE sip:a@b SIP/2.0\r\n", NoMatch},
		{"redis", "rtsp setup", "SETUP rtsp://x/t RTSP/1.0\r\n", NoMatch},
		{"redis", "ssh", "SSH-2.0-OpenSSH\r\n", NoMatch},
		{"redis", "control byte", "PING \x01\r\n", NoMatch},
		{"redis", "bare cr", "PING\rX\n", NoMatch},
		{"redis", "tls", "\x16\x03\x01", NoMatch},
		{"webdav", "propfind", "PROPFIND /dav/ HTTP/1.1\r\nHost: a\r\nDepth: 1\r\nContent-Length: 0\r\n\r\n", Match},
		{"webdav", "proppatch", "PROPPATCH /f HTTP/1.1\r\n", Match},
		{"webdav", "mkcol", "MKCOL /new/ HTTP/1.1\r\n", Match},
		{"webdav", "copy", "COPY /a HTTP/1.1\r\nDestination: /b\r\n\r\n", Match},
		{"webdav", "move", "MOVE /a HTTP/1.0\n", Match},
		{"webdav", "lock", "LOCK /a HTTP/1.1\r\n", Match},
		{"webdav", "unlock", "UNLOCK /a HTTP/1.1\r\n", Match},
		{"webdav", "search", "SEARCH / HTTP/1.1\r\n", Match},
		{"webdav", "report", "REPORT /cal/ HTTP/1.1\r\n", Match},
		{"webdav", "mkcalendar", "MKCALENDAR /cal/x/ HTTP/1.1\r\n", Match},
		{"webdav", "baseline-control", "BASELINE-CONTROL /x HTTP/1.1\r\n", Match},
		{"webdav", "prefix", "PROPF", NeedMore},
		{"webdav", "line incomplete", "PROPFIND /dav/ HTTP/1.", NeedMore},
		{"webdav", "get is http", "GET /dav/ HTTP/1.1\r\n", NoMatch},
		{"webdav", "put is http", "PUT /dav/f HTTP/1.1\r\n", NoMatch},
		{"webdav", "options is http", "OPTIONS /dav/ HTTP/1.1\r\n", NoMatch},
		{"webdav", "early reject", "PO", NoMatch},
		{"webdav", "lower case", "propfind / HTTP/1.1\r\n", NoMatch},
		{"webdav", "no version", "PROPFIND /\r\n", NoMatch},
		{"webdav", "h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", NoMatch},
		{"websocket", "rfc 6455", wsHandshake, Match},
		{"websocket", "case and list", "GET / HTTP/1.1\nhost: x\nCONNECTION: upgrade\nupgrade:  h2c, WebSocket \n\n", Match},
		{"websocket", "versioned token", "GET / HTTP/1.1\r\nUpgrade: websocket/13\r\n\r\n", Match},
		{"websocket", "frame after", "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n\x81\x85", Match},
		{"websocket", "headers incomplete", "GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n", NeedMore},
		{"websocket", "line only", "GET / HTTP/1.1\r\n", NeedMore},
		{"websocket", "prefix", "GE", NeedMore},
		{"websocket", "plain get", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", NoMatch},
		{"websocket", "other upgrade", "GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n", NoMatch},
		{"websocket", "token in other header", "GET / HTTP/1.1\r\nX-Upgrade: websocket\r\n\r\n", NoMatch},
		{"websocket", "substring token", "GET / HTTP/1.1\r\nUpgrade: websockets\r\n\r\n", NoMatch},
		{"websocket", "post", "POST / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", NoMatch},
		{"websocket", "http 1.0", "GET / HTTP/1.0\r\nUpgrade: websocket\r\n\r\n", NoMatch},
		{"websocket", "h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", NoMatch},
		{"websocket", "redis", "GET key\r\n", NoMatch},
		{"tls", "client hello", string(hello), Match},
		{"tls", "header only", string(hello[:11]), Match},
		{"tls", "one byte records", string(tiny), Match},
		{"tls", "three byte records", string(small), Match},
		{"tls", "ssl3 record", "\x16\x03\x00\x00\x40\x01\x00\x00\x3c\x03\x00", Match},
		{"tls", "tls13 record version", "\x16\x03\x04\x00\x40\x01\x00\x00\x3c\x03\x03", Match},
		{"tls", "record prefix", string(hello[:5]), NeedMore},
		{"tls", "handshake prefix", string(hello[:9]), NeedMore},
		{"tls", "one byte", "\x16", NeedMore},
		{"tls", "alert", "\x15\x03\x01\x00\x02\x02\x28", NoMatch},
		{"tls", "application data", "\x17\x03\x03\x00\x10", NoMatch},
		{"tls", "bad major", "\x16\x02\x01", NoMatch},
		{"tls", "bad minor", "\x16\x03\x05", NoMatch},
		{"tls", "empty record", "\x16\x03\x01\x00\x00", NoMatch},
		{"tls", "record too long", "\x16\x03\x01\x40\x01", NoMatch},
		{"tls", "server hello", "\x16\x03\x03\x00\x40\x02\x00\x00\x3c\x03\x03", NoMatch},
		{"tls", "hello too short", "\x16\x03\x01\x00\x40\x01\x00\x00\x10", NoMatch},
		{"tls", "bad client version", "\x16\x03\x01\x00\x40\x01\x00\x00\x3c\x02\x00", NoMatch},
		{"tls", "bad client minor", "\x16\x03\x01\x00\x40\x01\x00\x00\x3c\x03\x05", NoMatch},
		{"tls", "next record not handshake", "\x16\x03\x01\x00\x02\x01\x00\x17\x03\x03", NoMatch},
		{"tls", "sslv2 compat", "\x80\x2e\x01\x03\x01\x00\x15\x00\x00\x00\x10", NoMatch},
		{"tls", "http", "GET / HTTP/1.1\r\n", NoMatch},
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
		// RFC 8467 padding makes queries longer than 511 bytes: the
		// length is any 2-byte value, the header and question decide.
		{"dns", "a 649-byte EDNS-padded query", dnsPaddedQuery(649), Match},
		{"dns", "a 65,535-byte query, its header and question", dnsPaddedQuery(65537)[:2+12+18], Match},
		{"dns", "text: the flags byte", "PING\r\n", NoMatch},
		{"dns", "256 questions", "\x02\x00\x62\xd1\x01\x20\x01\x00", NoMatch},
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
}

// TestCatalogue: for every case, the detector of the protocol the registry
// builds gives the case's verdict and keeps a decision made on a prefix for
// every longer prefix (checkDetector); a flight it does not reject starts
// with one of the protocol's FirstBytes, or the engine's first-byte index
// would never offer it to the detector.
func TestCatalogue(t *testing.T) {
	for _, c := range catalogueCases() {
		t.Run(c.proto+"/"+c.name, func(t *testing.T) {
			p := builtin(t, c.proto)
			checkDetector(t, c.name, p.Detect, []byte(c.data), c.want)
			if c.want != NoMatch && c.data != "" && bytes.IndexByte(p.FirstBytes, c.data[0]) < 0 {
				t.Errorf("%s: first byte %q is not in FirstBytes %q", c.name, c.data[0], p.FirstBytes)
			}
		})
	}
}

// TestCatalogueInspect: the metadata the inspectors of the built-ins that
// take route conditions read from a first flight; ok is false while more
// bytes could still change it, and once it is true on a prefix every longer
// prefix gives the same metadata (checkInspectMonotonic).
func TestCatalogueInspect(t *testing.T) {
	tlsHello := func(sni string, alpn ...string) string {
		return string(tlsTestRecords(tlsTestHello(sni, alpn, 0, 0), tlsMaxRecord))
	}
	cases := []struct {
		proto, name, data string
		want              Metadata
		ok                bool
	}{
		{"http", "host", "GET / HTTP/1.1\r\nHost: Example.COM\r\n\r\n", Metadata{Host: "example.com"}, true},
		{"http", "host port", "GET / HTTP/1.1\r\nUser-Agent: x\r\nhost: www.example.com:8080\r\n", Metadata{Host: "www.example.com"}, true},
		{"http", "ipv6", "GET / HTTP/1.1\r\nHost: [2001:DB8::1]:443\r\n", Metadata{Host: "2001:db8::1"}, true},
		{"http", "ipv6 no port", "GET / HTTP/1.1\r\nHost: [::1]\r\n", Metadata{Host: "::1"}, true},
		{"http", "trailing dot", "GET / HTTP/1.1\r\nHost: example.com.\r\n", Metadata{Host: "example.com"}, true},
		{"http", "spaces", "GET / HTTP/1.1\r\nHOST:\t example.org \r\n", Metadata{Host: "example.org"}, true},
		{"http", "lf only", "GET / HTTP/1.0\nHost: a.b\n\n", Metadata{Host: "a.b"}, true},
		{"http", "first host wins", "GET / HTTP/1.1\r\nHost: one\r\nHost: two\r\n\r\n", Metadata{Host: "one"}, true},
		{"http", "no host", "GET / HTTP/1.0\r\nAccept: */*\r\n\r\n", Metadata{}, true},
		{"http", "waiting for host", "GET / HTTP/1.1\r\nAccept: */*\r\n", Metadata{}, false},
		{"http", "host line incomplete", "GET / HTTP/1.1\r\nHost: exam", Metadata{}, false},
		{"http", "line incomplete", "GET / HTT", Metadata{}, false},
		{"http", "absolute form", "GET http://User@Proxy.Example:81/x HTTP/1.1\r\nHost: other\r\n\r\n", Metadata{Host: "proxy.example"}, true},
		{"http", "absolute https", "GET https://a.example HTTP/1.1\r\n", Metadata{Host: "a.example"}, true},
		{"http", "connect", "CONNECT Tunnel.Example:443 HTTP/1.1\r\n", Metadata{Host: "tunnel.example"}, true},
		{"http", "not http", "SSH-2.0-x\r\n", Metadata{}, true},
		{"http", "hostname header", "GET / HTTP/1.1\r\nHostname: nope\r\nHost: yes\r\n", Metadata{Host: "yes"}, true},
		{"websocket", "rfc 6455", wsHandshake, Metadata{Host: "server.example.com"}, true},
		{"tls", "sni and alpn", tlsHello("WWW.Example.COM.", "h2", "http/1.1"), Metadata{SNI: "www.example.com", ALPN: []string{"h2", "http/1.1"}}, true},
		{"tls", "no sni", tlsHello("", "h2"), Metadata{ALPN: []string{"h2"}}, true},
		{"tls", "no alpn", tlsHello("a.b"), Metadata{SNI: "a.b"}, true},
		{"tls", "not tls", "GET / HTTP/1.1\r\n", Metadata{}, true},
		{"tls", "server hello", "\x16\x03\x03\x00\x40\x02\x00\x00\x3c", Metadata{}, true},
		{"tls", "hello incomplete", tlsHello("a.b")[:20], Metadata{}, false},
	}
	for _, c := range cases {
		inspect := builtin(t, c.proto).Inspect
		if md, ok := inspect([]byte(c.data)); ok != c.ok || !reflect.DeepEqual(md, c.want) {
			t.Errorf("%s/%s: inspect = %+v, %v; want %+v, %v", c.proto, c.name, md, ok, c.want, c.ok)
		}
		checkInspectMonotonic(t, c.proto+"/"+c.name, inspect, []byte(c.data))
	}
}

// TestCatalogueInspectFlights: the metadata of recorded flights, read by
// the inspector of the flight's protocol (its file name's prefix).
func TestCatalogueInspectFlights(t *testing.T) {
	both := []string{"h2", "http/1.1"}
	for name, want := range map[string]Metadata{
		"http-curl.bin":            {Host: "127.0.0.1"},
		"http-curl-post.bin":       {Host: "127.0.0.1"},
		"http-wget.bin":            {Host: "127.0.0.1"},
		"http-curl-proxy.bin":      {Host: "www.example.com"},
		"websocket-curl.bin":       {Host: "127.0.0.1"},
		"webdav-curl-propfind.bin": {Host: "127.0.0.1"},
		"tls-openssl-sni.bin":      {SNI: "example.com", ALPN: both},
		"tls-openssl-nosni.bin":    {},
		"tls-curl.bin":             {SNI: "example.test", ALPN: both},
		"tls-go.bin":               {SNI: "go.example.test", ALPN: both},
	} {
		inspect := builtin(t, strings.SplitN(name, "-", 2)[0]).Inspect
		data := testnet.Flight(t, name)
		if md, ok := inspect(data); !ok || !reflect.DeepEqual(md, want) {
			t.Errorf("%s: inspect = %+v, %v; want %+v", name, md, ok, want)
		}
		checkInspectMonotonic(t, name, inspect, data)
	}
}

// FuzzCatalogue: every built-in detector decides a buffer's prefixes as it
// decides the whole buffer (a decision, once made, never changes).
func FuzzCatalogue(f *testing.F) {
	for _, data := range testnet.Flights(f, "") {
		f.Add(data)
	}
	var ds []Descriptor
	for _, d := range Descriptors() {
		if d.Detect != nil {
			ds = append(ds, d)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, d := range ds {
			whole := d.Detect(data)
			for k := 0; k <= len(data); k++ {
				if r := d.Detect(data[:k]); r != NeedMore {
					if r != whole {
						t.Fatalf("%s: prefix %d says %v, whole says %v", d.Name, k, r, whole)
					}
					break
				}
			}
		}
	})
}
