package protocols

import "encoding/binary"

func init() { register(stunDescriptor, NewSTUNProtocol) }

var stunDescriptor = Descriptor{Spec: Spec{Name: "STUN", Transports: TCP | UDP, Detect: detectSTUN, Datagram: detectSTUNDatagram,
	FirstBytes: []byte{0x00, 0x01}}, Aliases: []string{"turn"}, Summary: "STUN/TURN message with the magic cookie"}

// NewSTUNProtocol routes STUN and TURN over TCP and UDP (RFC 8489/8656):
// the first two bits zero, a length that is a multiple of 4, and the magic
// cookie 0x2112A442 at offset 4. Over UDP the first datagram is one whole
// message: its length is the datagram's less the 20-byte header, and its
// type is a request or an indication (a client does not open with a
// response).
func NewSTUNProtocol(target string) *Protocol { return build(&stunDescriptor, target) }

const stunHeader = 20

func detectSTUNDatagram(datagrams [][]byte) Result {
	if len(datagrams) == 0 {
		return NeedMore
	}
	d := datagrams[0]
	if len(d) < stunHeader || detectSTUN(d) != Match {
		return NoMatch
	}
	typ := binary.BigEndian.Uint16(d)
	if typ&0x0100 != 0 || int(binary.BigEndian.Uint16(d[2:4])) != len(d)-stunHeader { // class bit C1: a response
		return NoMatch
	}
	return Match
}

func detectSTUN(data []byte) Result {
	if len(data) == 0 {
		return NeedMore
	}
	if data[0]&0xc0 != 0 {
		return NoMatch
	}
	if len(data) < 4 {
		return NeedMore
	}
	if binary.BigEndian.Uint16(data[2:4])%4 != 0 {
		return NoMatch
	}
	return matchPrefixesAt(data, 4, []byte{0x21, 0x12, 0xA4, 0x42})
}

// matchPrefixesAt is matchPrefixes for a fixed string at offset off.
func matchPrefixesAt(data []byte, off int, want []byte) Result {
	if len(data) <= off {
		return NeedMore
	}
	return matchPrefixes(data[off:], [][]byte{want})
}
