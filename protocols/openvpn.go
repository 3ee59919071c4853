package protocols

import "encoding/binary"

func init() { register(openVPNDescriptor, NewOpenVPNProtocol) }

var openVPNDescriptor = Descriptor{Spec: Spec{Name: "OpenVPN", Transports: TCP | UDP, Detect: detectOpenVPN,
	Datagram: detectOpenVPNDatagram, FirstBytes: []byte{0x00}}, Summary: "OpenVPN over TCP or UDP: a client hard reset"}

// NewOpenVPNProtocol routes OpenVPN over TCP and UDP. Over TCP: a 2-byte
// packet length (14–2048) and the client's first packet,
// P_CONTROL_HARD_RESET_CLIENT_V2 (opcode 7) or V3 (opcode 10) with key id 0,
// arriving whole (the client then waits for the server's reset). Over UDP
// the first datagram is that packet, without a length, and its layout must
// parse as one the client sends: V2 plain (empty ack array, message
// packet-id 0), V2 with tls-auth (an HMAC of 16 to 64 bytes, then replay
// packet-id, time, empty ack array, message packet-id 0), V2 with tls-crypt
// or V3 with tls-crypt-v2 (replay packet-id, time, 32-byte tag, ciphertext;
// V3 ends with the wrapped client key and its 2-byte length).
func NewOpenVPNProtocol(target string) *Protocol { return build(&openVPNDescriptor, target) }

const (
	openVPNResetV2 = 7 << 3 // P_CONTROL_HARD_RESET_CLIENT_V2, key id 0
	openVPNResetV3 = 10 << 3
	// openVPNSession is the opcode byte and session id.
	openVPNSession = 1 + 8
	// openVPNCrypt is a tls-crypt header: session, replay packet-id and
	// time, tag, then at least the encrypted empty ack array and message
	// packet-id.
	openVPNCrypt = openVPNSession + 8 + 32 + 5
	openVPNMax   = 2048
)

// openVPNHMACs are the tls-auth HMAC sizes: MD5, SHA-1, SHA-224, SHA-256,
// SHA-384, SHA-512.
var openVPNHMACs = [...]int{16, 20, 28, 32, 48, 64}

func detectOpenVPNDatagram(datagrams [][]byte) Result {
	if len(datagrams) == 0 {
		return NeedMore
	}
	d := datagrams[0]
	if len(d) < openVPNSession+5 || len(d) > openVPNMax || (d[0] != openVPNResetV2 && d[0] != openVPNResetV3) {
		return NoMatch
	}
	ok := false
	if d[0] == openVPNResetV2 {
		ok = openVPNPlain(d[openVPNSession:])
		for _, n := range openVPNHMACs {
			ok = ok || len(d) >= openVPNSession+n+8 && openVPNReplay(d[openVPNSession+n:]) && openVPNPlain(d[openVPNSession+n+8:])
		}
		ok = ok || len(d) >= openVPNCrypt && openVPNReplay(d[openVPNSession:])
	} else if len(d) >= openVPNCrypt+2 && openVPNReplay(d[openVPNSession:]) {
		// The wrapped client key (tag, encrypted key, metadata) ends with its
		// own length, which counts itself.
		wkc := int(binary.BigEndian.Uint16(d[len(d)-2:]))
		ok = wkc >= 2+32 && wkc <= len(d)-openVPNCrypt
	}
	// A DNS query whose random ID starts with an opcode byte could fit a
	// layout (see detectOpenVPN).
	if !ok || dnsQuery(d, len(d)) == Match {
		return NoMatch
	}
	return Match
}

// openVPNPlain: an empty ack array and message packet-id 0, the first
// control packet's.
func openVPNPlain(b []byte) bool {
	return len(b) >= 5 && b[0] == 0 && binary.BigEndian.Uint32(b[1:5]) == 0
}

// openVPNReplay: a replay packet-id a new session's first packets carry
// (counting from 1; retransmissions add one each; a high byte 0x0f is a
// client announcing early negotiation, OpenVPN 2.6's EARLY_NEG_START) and a
// non-zero time.
func openVPNReplay(b []byte) bool {
	if len(b) < 8 {
		return false
	}
	id := binary.BigEndian.Uint32(b)
	if id>>24 == 0x0f {
		id &= 0x00ffffff
	}
	return id >= 1 && id <= 255 && binary.BigEndian.Uint32(b[4:8]) != 0
}

func detectOpenVPN(data []byte) Result {
	switch {
	case len(data) == 0:
		return NeedMore
	case data[0] > 0x08: // length ≤ 2048
		return NoMatch
	case len(data) == 1:
		return NeedMore
	}
	n := int(binary.BigEndian.Uint16(data))
	if n < 14 || n > 2048 {
		return NoMatch
	}
	if len(data) < 3 {
		return NeedMore
	}
	if data[2] != 7<<3 && data[2] != 10<<3 {
		return NoMatch
	}
	if len(data) < 2+n {
		return NeedMore
	}
	// A DNS-over-TCP query has the same 2-byte length framing, and its
	// random ID's first byte is 7<<3 or 10<<3 in 2 of 256 queries: without
	// this check those (0.8% of dig +tcp queries, found by the cross-test)
	// would match OpenVPN too, and go to it whenever OpenVPN ranks first. A
	// hard reset that also parses as a DNS query needs session-id/HMAC bytes
	// forming a query header and question (~1e-5). detectDNS has decided at
	// this point (it looks at no more than the 2+n bytes), so this stays
	// split-safe.
	if detectDNS(data) == Match {
		return NoMatch
	}
	return Match
}
