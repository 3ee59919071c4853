package protocols_test

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/darkit/protoplex/internal/identify"
	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/protocols"
)

// The all-against-all cross-test: every first flight (the recorded ones in
// testdata/flights, picked up by glob, plus the hand-built ones below) is fed
// to every built-in protocol. Its own protocol must match it; no other one
// may, except for the pairs listed in crossExceptions. Then a table of every
// built-in, registered in both name order and reverse name order, must route
// each flight to its own protocol: the ranking (specificity, priority,
// registration order) must not depend on luck.
//
// It is an external test package so that it can build an identify.Table
// (internal/identify imports protocols).

// crossException is a (detector, flight protocol) pair: the detector named
// by its Protocol.Name (lower case) may also match flights of that protocol
// (the YAML name, which is a flight file's prefix).
type crossException struct{ detector, flight string }

// crossExceptions: every tolerated double match, with the reason. Anything
// else that matches a foreign flight fails the test.
var crossExceptions = map[crossException]string{
	{"http", "websocket"}: "an Upgrade request is an HTTP/1.1 GET; WebSocket has Specificity 1 and outranks HTTP",
	{"http", "webdav"}:    "the HTTP detector accepts WebDAV methods (an HTTP route serves WebDAV clients too); WebDAV has Specificity 1 and outranks HTTP",
	{"socks", "socks4"}:   "the generic SOCKS route is SOCKS4 or SOCKS5: same protocol, registration order picks one",
	{"socks", "socks5"}:   "the generic SOCKS route is SOCKS4 or SOCKS5: same protocol, registration order picks one",
}

func crossExcepted(detector, flight string) bool {
	_, ok := crossExceptions[crossException{detector, flight}]
	return ok
}

// crossRankAlso: the ranking may pick these instead of the flight's own
// protocol, for the same reason as in crossExceptions. Only genuine aliases
// belong here; sub-protocols (WebSocket, WebDAV) must win by specificity.
var crossRankAlso = map[string]string{
	"socks4": "socks",
	"socks5": "socks",
}

// crossHandBuilt are valid first flights for the protocols that have no
// recorded one yet (and a few variants of recorded ones that exercise
// collisions); the key's prefix before '-' is the protocol, as for files.
func crossHandBuilt() map[string][]byte {
	// RTMP C0 + C1 as ffmpeg sends it: version 3, time 0, a non-zero
	// version field (complex handshake), 1528 pseudo-random bytes.
	rtmp := make([]byte, 1+1536)
	rtmp[0] = 3
	copy(rtmp[5:9], []byte{9, 0, 124, 2})
	x := uint32(2463534242)
	for i := 9; i < len(rtmp); i++ {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		rtmp[i] = byte(x)
	}
	session := "\x8a\x13\x5c\xe2\x07\x44\x91\x3f"
	hmac := "\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\xcc\xdd\xee\xff\x01\x02\x03\x04\x05"
	flights := map[string]string{
		// RFC 8489 Binding request over TCP, with a SOFTWARE attribute.
		"stun-binding":          "\x00\x01\x00\x00\x21\x12\xa4\x42abcdefghijkl",
		"stun-binding-software": "\x00\x01\x00\x0c\x21\x12\xa4\x42abcdefghijkl\x80\x22\x00\x07stunc\x00\x00\x00",
		// RFC 3261 requests over TCP.
		"sip-options": "OPTIONS sip:user@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK776asdhds\r\nMax-Forwards: 70\r\nCall-ID: a84b4c76e66710\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
		"sip-invite":  "INVITE sips:bob@example.test SIP/2.0\r\nVia: SIP/2.0/TLS client.example.test\r\n\r\n",
		// RFC 2326 requests as ffmpeg sends them.
		"rtsp-options":  "OPTIONS rtsp://127.0.0.1:8554/stream RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: Lavf60.16.100\r\n\r\n",
		"rtsp-announce": "ANNOUNCE rtsp://127.0.0.1:8554/stream RTSP/1.0\r\nContent-Type: application/sdp\r\nCSeq: 2\r\n\r\n",
		// MS-RDPBCGR Connection Request: TPKT, X.224 CR, optional cookie,
		// RDP_NEG_REQ (TLS | CredSSP).
		"rdp-negreq": "\x03\x00\x00\x13\x0e\xe0\x00\x00\x00\x00\x00\x01\x00\x08\x00\x03\x00\x00\x00",
		"rdp-cookie": "\x03\x00\x00\x2a\x25\xe0\x00\x00\x00\x00\x00Cookie: mstshash=user\r\n\x01\x00\x08\x00\x03\x00\x00\x00",
		"rtmp-c0c1":  string(rtmp),
		// P_CONTROL_HARD_RESET_CLIENT_V2 (opcode 7, key id 0): session id,
		// ack array length 0, message packet id 0; then with OpenVPN 2.6's
		// EARLY_NEG_START TLV; then with tls-auth (HMAC-SHA1, packet id,
		// net time before the ack array).
		"openvpn-v2":       "\x00\x0e\x38" + session + "\x00\x00\x00\x00\x00",
		"openvpn-v2-early": "\x00\x14\x38" + session + "\x00\x00\x00\x00\x00\x00\x0f\x00\x02\x00\x01",
		"openvpn-tlsauth":  "\x00\x2a\x38" + session + hmac + "\x00\x00\x00\x01\x66\x00\x00\x01\x00\x00\x00\x00\x00",
		// SMTP client that speaks first.
		"smtp-ehlo": "EHLO client.example.test\r\n",
		"smtp-helo": "helo client\r\n",
		// dig +tcp queries whose random ID's first byte is an OpenVPN
		// hard-reset opcode (7<<3, 10<<3): must stay DNS.
		"dns-id-0x38": "\x00\x35\x38\xd1\x01\x20\x00\x01\x00\x00\x00\x00\x00\x01\x07example\x04test\x00\x00\x01\x00\x01\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x0c\x00\x0a\x00\x08\x3e\x1f\x4b\x5c\x6d\x7e\x8f\x90",
		"dns-id-0x50": "\x00\x1e\x50\x07\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x04test\x00\x00\x1c\x00\x01",
		// PostgreSQL CancelRequest and GSSENCRequest.
		"postgresql-cancel": "\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x30\x39\x12\x34\x56\x78",
		"postgresql-gssenc": "\x00\x00\x00\x08\x04\xd2\x16\x30",
		// MQTT 3.1.1 CONNECT with a client id.
		"mqtt-connect":      "\x10\x13\x00\x04MQTT\x04\x02\x00\x3c\x00\x07client1",
		"mqtt-connect-test": "\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04test",
		// Written from the RFCs and specs: SOCKS5 greeting without
		// authentication, SOCKS4 CONNECT with a user id, an RTMP C1 of
		// zeros, an RTSP SETUP, SIP requests of methods that are also Redis
		// or HTTP words, a DNS query and a PostgreSQL SSLRequest.
		"socks5-noauth":   "\x05\x01\x00",
		"socks4-user":     "\x04\x01\x00\x50\x7f\x00\x00\x01user\x00",
		"rtmp-zero-c1":    "\x03" + strings.Repeat("\x00", 1536),
		"rtsp-setup":      "SETUP rtsp://example.com/media.mp4/track1 RTSP/1.0\r\nCSeq: 3\r\n\r\n",
		"sip-info":        "INFO sip:bob@biloxi.com SIP/2.0\r\n\r\n",
		"sip-options-uri": "OPTIONS sip:carol@chicago.com SIP/2.0\r\n\r\n",
		"sip-publish":     "PUBLISH sip:presentity@example.com SIP/2.0\r\n\r\n",
		"dns-example-com": "\x00\x1d\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01",
		"postgresql-ssl":  "\x00\x00\x00\x08\x04\xd2\x16\x2f",
	}
	out := make(map[string][]byte, len(flights))
	for k, v := range flights {
		out[k] = []byte(v)
	}
	return out
}

// crossFlight is one first flight: its name (file or hand-built key), the
// YAML name of its protocol and the bytes.
type crossFlight struct {
	name, proto string
	data        []byte
}

func crossFlights(t *testing.T) []crossFlight {
	t.Helper()
	var out []crossFlight
	for name, data := range testnet.Flights(t, "") {
		out = append(out, crossFlight{name, strings.SplitN(name, "-", 2)[0], data})
	}
	for name, data := range crossHandBuilt() {
		out = append(out, crossFlight{name + " (hand-built)", strings.SplitN(name, "-", 2)[0], data})
	}
	slices.SortFunc(out, func(a, b crossFlight) int { return strings.Compare(a.name, b.name) })
	return out
}

// crossBuiltins returns one Protocol per registered built-in, in name order.
func crossBuiltins(t *testing.T) []*protocols.Protocol {
	t.Helper()
	var out []*protocols.Protocol
	for _, d := range protocols.Descriptors() {
		out = append(out, d.New("127.0.0.1:1"))
	}
	if len(out) == 0 {
		t.Fatal("no built-in protocols registered")
	}
	return out
}

// crossProtoName maps a flight's protocol (its YAML name) to the lower-case
// Name of the built-in that must match it.
func crossProtoName(t *testing.T, proto string) string {
	t.Helper()
	d, ok := protocols.Describe(proto)
	if !ok {
		t.Fatalf("flight protocol %q is not a built-in protocol name", proto)
	}
	return strings.ToLower(d.Name)
}

func TestCrossAllFlightsAllDetectors(t *testing.T) {
	ps := crossBuiltins(t)
	flights := crossFlights(t)
	matchedOwn := map[string]int{}
	for _, f := range flights {
		own := crossProtoName(t, f.proto)
		if len(f.data) == 0 {
			// A silent client: only a server-first protocol can own it.
			if d, _ := protocols.Describe(f.proto); !d.ServerFirst {
				t.Errorf("%s: empty flight for client-first %s", f.name, own)
			}
			matchedOwn[own]++
			continue
		}
		for _, p := range ps {
			name := strings.ToLower(p.Name)
			got := p.Detector()(f.data)
			switch {
			case name == own:
				if got != protocols.Match {
					t.Errorf("%s: own detector %s says %v", f.name, p.Name, got)
					continue
				}
				matchedOwn[name]++
				// Split-read: no prefix is rejected, and once a prefix
				// matches every longer one does.
				matched := false
				for i := 0; i <= len(f.data); i++ {
					r := p.Detector()(f.data[:i])
					if r == protocols.NoMatch || (matched && r != protocols.Match) {
						t.Errorf("%s: %s says %v on a prefix of %d bytes", f.name, p.Name, r, i)
						break
					}
					matched = r == protocols.Match
				}
			case got == protocols.Match && crossExcepted(name, f.proto):
				if crossRankAlso[f.proto] == name {
					matchedOwn[name]++ // an alias's flight is its own
				}
			default:
				// A foreign flight is rejected outright by a detector the
				// engine asks for it (one indexed under its first byte),
				// so the engine never waits for that detector; and a
				// prefix's decision is the whole flight's.
				if got != protocols.NoMatch && (got == protocols.Match || bytes.IndexByte(p.FirstBytes, f.data[0]) >= 0) {
					t.Errorf("%s detector says %v on %s (a %s flight), want NoMatch", p.Name, got, f.name, f.proto)
				}
				decided := protocols.NeedMore
				for i := 0; i <= len(f.data); i++ {
					r := p.Detector()(f.data[:i])
					if decided != protocols.NeedMore && r != decided {
						t.Errorf("%s: %s says %v on a prefix of %d bytes after %v", f.name, p.Name, r, i, decided)
						break
					}
					if r != protocols.NeedMore {
						decided = r
					}
				}
			}
		}
	}
	// Every built-in on TCP participates with at least one flight of its
	// own, except those no client bytes select: the silence-only FTP and
	// timeout, and the catch-all anyprot (their detectors must reject
	// everything, which the loop above checked). The UDP-only ones have
	// datagrams instead (TestDatagramCross).
	for _, p := range ps {
		name := strings.ToLower(p.Name)
		if p.Transports()&protocols.TCP == 0 {
			continue
		}
		switch name {
		case "ftp", "timeout":
			if !p.ServerFirst() {
				t.Errorf("%s must be server-first", p.Name)
			}
			continue
		case protocols.AnyProt:
			continue
		}
		if matchedOwn[name] == 0 {
			t.Errorf("no first flight (recorded or hand-built) for %s", p.Name)
		}
	}
	// The exceptions table must not hold stale entries.
	used := map[crossException]bool{}
	for _, f := range flights {
		for _, p := range ps {
			e := crossException{strings.ToLower(p.Name), f.proto}
			if crossExcepted(e.detector, e.flight) && p.Detector()(f.data) == protocols.Match {
				used[e] = true
			}
		}
	}
	for e, why := range crossExceptions {
		if !used[e] {
			t.Errorf("exception %v (%s) is never needed: remove it", e, why)
		}
	}
}

// TestCrossServerFirst: exactly FTP, SMTP and timeout are chosen on client
// silence.
func TestCrossServerFirst(t *testing.T) {
	var got []string
	for _, p := range crossBuiltins(t) {
		if p.ServerFirst() {
			got = append(got, p.Name)
		}
	}
	if !slices.Equal(got, []string{"FTP", "SMTP", "timeout"}) {
		t.Fatalf("server-first built-ins: %v, want [FTP SMTP timeout]", got)
	}
}

// TestCrossRanking: an identify.Table holding every built-in routes every
// whole flight to its own protocol, with a final verdict, whatever the
// registration order.
func TestCrossRanking(t *testing.T) {
	ps := crossBuiltins(t)
	flights := crossFlights(t)
	for _, order := range []string{"name order", "reverse name order"} {
		list := slices.Clone(ps)
		if order == "reverse name order" {
			slices.Reverse(list)
		}
		specs := make([]identify.RouteSpec, len(list))
		for i, p := range list {
			specs[i] = identify.RouteSpec{Spec: p.Spec(), Conditions: p.Conditions(), Priority: p.Priority}
		}
		tb, err := identify.New(specs, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		if sf := tb.ServerFirst(); sf == nil || !sf.ServerFirst() {
			t.Errorf("%s: no server-first route", order)
		}
		for _, f := range flights {
			own := crossProtoName(t, f.proto)
			if len(f.data) == 0 {
				continue // silence: TestCrossServerFirst
			}
			v := tb.Evaluate(f.data)
			if v.Best == nil || !v.Final {
				t.Errorf("%s: %s: no final match (best %v, final %v, rejected %v)", order, f.name, v.Best != nil, v.Final, v.Rejected)
				continue
			}
			got := strings.ToLower(v.Best.Name)
			if got != own && got != crossRankAlso[f.proto] {
				t.Errorf("%s: %s routed to %s, want %s", order, f.name, v.Best.Name, own)
			}
		}
	}
}
