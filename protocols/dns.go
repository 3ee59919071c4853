package protocols

import "encoding/binary"

func init() { register(dnsDescriptor, NewDNSProtocol) }

var dnsDescriptor = Descriptor{Spec: Spec{Name: "DNS", Transports: TCP | UDP, Detect: detectDNS, Datagram: detectDNSDatagram,
	FirstBytes: dnsFirstBytes()}, Summary: "DNS over TCP or UDP: a query with a well-formed first question"}

// dnsFirstBytes are the high bytes of every length but 0x05xx: a SOCKS5
// greeting (05 01 00) is 3 bytes after which its client waits for the
// server, and those 3 bytes cannot be told from the start of a DNS message
// of 1,280-1,535 bytes, so DNS would hold every SOCKS5 client until the
// identify timeout.
func dnsFirstBytes() []byte {
	out := make([]byte, 0, 255)
	for b := range 256 {
		if b != 0x05 {
			out = append(out, byte(b))
		}
	}
	return out
}

// NewDNSProtocol routes DNS over TCP and UDP: a header that is a query
// (QR=0), with a query/notify/update opcode, Z=0, 1–16 questions and no
// answers, then a well-formed first question (labels ≤ 63 bytes, name ≤ 255,
// QTYPE and QCLASS) inside the message. Over TCP the message follows a
// 2-byte length; over UDP it is the flow's first datagram, whole, and its
// questions and records (at most 64) must end where the datagram ends.
//
// A TCP message may be as long as its 2-byte length allows (65,535 bytes:
// EDNS padding, RFC 8467, and dynamic updates make queries of any size), so
// its first byte is almost any byte (dnsFirstBytes). The decision never needs the whole message: the header and the
// first question (at most 2+12+255+4 bytes) decide, so the read stays
// bounded by the header, not by the length the client announces. The header
// is checked as each byte arrives: a client whose 7th byte is not 0 (the
// high byte of QDCOUNT, at most 16; every text client) is refused by then,
// any other once the 14 bytes of length and header are in, so only a
// client that sends fewer and waits for the server can wait for DNS. A UDP query starts with its random ID, any byte.
func NewDNSProtocol(target string) *Protocol { return build(&dnsDescriptor, target) }

// dnsMinQuery is the smallest query: a 12-byte header, the root name, QTYPE
// and QCLASS.
const dnsMinQuery = 17

func detectDNS(data []byte) Result {
	if len(data) < 2 {
		return NeedMore
	}
	msgLen := int(binary.BigEndian.Uint16(data))
	if msgLen < dnsMinQuery || data[0] == 0x05 {
		return NoMatch
	}
	return dnsQuery(data[2:], msgLen)
}

// dnsMaxRecords bounds the resource records a UDP query may carry after its
// questions (an OPT record, an update's prerequisites and updates, TSIG).
const dnsMaxRecords = 64

// detectDNSDatagram: the first datagram is one whole query, and its
// sections (every question, then the records its counts announce) end
// exactly where the datagram does.
func detectDNSDatagram(datagrams [][]byte) Result {
	if len(datagrams) == 0 {
		return NeedMore
	}
	d := datagrams[0]
	if len(d) < dnsMinQuery || dnsQuery(d, len(d)) != Match {
		return NoMatch
	}
	qd := int(binary.BigEndian.Uint16(d[4:6]))
	rrs := int(binary.BigEndian.Uint16(d[6:8])) + int(binary.BigEndian.Uint16(d[8:10])) + int(binary.BigEndian.Uint16(d[10:12]))
	if rrs > dnsMaxRecords {
		return NoMatch
	}
	i := 12
	for range qd {
		if i = dnsSkipName(d, i) + 4; i > len(d) {
			return NoMatch
		}
	}
	for range rrs {
		if i = dnsSkipName(d, i) + 10; i > len(d) { // type, class, TTL, RDLENGTH
			return NoMatch
		}
		if i += int(binary.BigEndian.Uint16(d[i-2:])); i > len(d) {
			return NoMatch
		}
	}
	if i != len(d) {
		return NoMatch
	}
	return Match
}

// dnsSkipName returns the offset after the name at msg[i:]: labels up to the
// root, or up to a compression pointer. It returns len(msg)+1 when the name
// does not end inside msg or is malformed.
func dnsSkipName(msg []byte, i int) int {
	for nameLen := 0; i < len(msg); {
		l := int(msg[i])
		switch {
		case l == 0:
			return i + 1
		case l&0xc0 == 0xc0:
			return i + 2
		case l > 63:
			return len(msg) + 1
		}
		if nameLen += l + 1; nameLen > 255 {
			return len(msg) + 1
		}
		i += 1 + l
	}
	return len(msg) + 1
}

// dnsQuery checks a query message of msgLen bytes of which msg holds the
// beginning (all of it when len(msg) ≥ msgLen): NeedMore while the header or
// first question is still to come.
func dnsQuery(msg []byte, msgLen int) Result {
	// Each header field is checked as soon as it is there: the flags byte
	// (QR=0, opcode), then Z, then QDCOUNT's high byte (at most 16
	// questions).
	if len(msg) > 2 {
		flags := msg[2]
		if opcode := flags >> 3 & 0x0f; flags&0x80 != 0 || (opcode != 0 && opcode != 4 && opcode != 5) {
			return NoMatch
		}
	}
	if len(msg) > 3 && msg[3]&0x40 != 0 {
		return NoMatch
	}
	if len(msg) > 4 && msg[4] != 0 {
		return NoMatch
	}
	if len(msg) < 12 {
		return NeedMore
	}
	h := msg[:12]
	opcode := h[2] >> 3 & 0x0f
	qd := binary.BigEndian.Uint16(h[4:6])
	an := binary.BigEndian.Uint16(h[6:8])
	if qd == 0 || qd > 16 || (opcode == 0 && an != 0) {
		return NoMatch
	}
	// First question name.
	i, nameLen := 12, 0
	for {
		if i >= msgLen {
			return NoMatch
		}
		if i >= len(msg) {
			return NeedMore
		}
		l := int(msg[i])
		if l == 0 {
			i++
			break
		}
		if l > 63 {
			return NoMatch // no compression pointer in a query's first name
		}
		nameLen += l + 1
		if nameLen > 255 {
			return NoMatch
		}
		i += 1 + l
	}
	if i+4 > msgLen {
		return NoMatch
	}
	if len(msg) < i+4 {
		return NeedMore
	}
	if qclass := binary.BigEndian.Uint16(msg[i+2:]); qclass != 1 && qclass != 3 && qclass != 4 && qclass != 254 && qclass != 255 {
		return NoMatch
	}
	return Match
}
