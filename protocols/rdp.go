package protocols

import "encoding/binary"

func init() { register(rdpDescriptor, NewRDPProtocol) }

var rdpDescriptor = Descriptor{Spec: Spec{Name: "RDP", Transports: TCP, Detect: detectRDP, FirstBytes: []byte{0x03}},
	Summary: "TPKT carrying an X.224 Connection Request"}

// NewRDPProtocol routes RDP: a TPKT header (version 3, reserved 0, length
// 11–4096) followed by an X.224 Connection Request (length indicator, code
// 0xE0). RTMP also starts with 0x03; its second byte is a timestamp byte and
// it never carries this structure.
func NewRDPProtocol(target string) *Protocol { return build(&rdpDescriptor, target) }

func detectRDP(data []byte) Result {
	if r := matchPrefixes(data, [][]byte{{0x03, 0x00}}); r != Match {
		return r
	}
	if len(data) < 6 {
		return NeedMore
	}
	tpktLen := int(binary.BigEndian.Uint16(data[2:4]))
	li := int(data[4])
	if tpktLen < 11 || tpktLen > 4096 || li != tpktLen-5 || data[5]&0xF0 != 0xE0 {
		return NoMatch
	}
	return Match
}
