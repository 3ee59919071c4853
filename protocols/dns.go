package protocols

import "encoding/binary"

func init() { register(dnsDescriptor, NewDNSProtocol) }

var dnsDescriptor = Descriptor{Name: "DNS", Transports: TCP, Detect: detectDNS, FirstBytes: []byte{0x00, 0x01},
	Summary: "DNS over TCP: a query with a well-formed first question"}

// NewDNSProtocol routes DNS over TCP: a 2-byte length, then a header that
// is a query (QR=0), with a query/notify/update opcode, Z=0, 1–16 questions
// and no answers, then a well-formed first question (labels ≤ 63 bytes,
// name ≤ 255, QTYPE and QCLASS) inside the announced length.
//
// Indexed under first bytes 0x00 and 0x01 (the length's high byte): queries
// up to 511 bytes, which covers what resolvers send; a length-prefixed
// detector without an index would make every other client wait for it.
func NewDNSProtocol(target string) *Protocol { return build(&dnsDescriptor, target) }

func detectDNS(data []byte) Result {
	if len(data) > 0 && data[0] > 0x01 {
		return NoMatch
	}
	if len(data) < 2 {
		return NeedMore
	}
	msgLen := int(binary.BigEndian.Uint16(data))
	if msgLen < 17 || msgLen > 511 { // 12-byte header + root name + type + class
		return NoMatch
	}
	if len(data) < 2+12 {
		return NeedMore
	}
	h := data[2:14]
	flags := h[2]
	opcode := flags >> 3 & 0x0f
	if flags&0x80 != 0 || (opcode != 0 && opcode != 4 && opcode != 5) || h[3]&0x40 != 0 {
		return NoMatch
	}
	qd := binary.BigEndian.Uint16(h[4:6])
	an := binary.BigEndian.Uint16(h[6:8])
	if qd == 0 || qd > 16 || (opcode == 0 && an != 0) {
		return NoMatch
	}
	// First question name.
	i, nameLen := 14, 0
	for {
		if i >= 2+msgLen {
			return NoMatch
		}
		if i >= len(data) {
			return NeedMore
		}
		l := int(data[i])
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
	if i+4 > 2+msgLen {
		return NoMatch
	}
	if len(data) < i+4 {
		return NeedMore
	}
	if qclass := binary.BigEndian.Uint16(data[i+2:]); qclass != 1 && qclass != 3 && qclass != 4 && qclass != 254 && qclass != 255 {
		return NoMatch
	}
	return Match
}
