package protocols

func init() { register(socks5Descriptor, NewSOCKS5Protocol) }

var socks5Descriptor = Descriptor{Spec: Spec{Name: "SOCKS5", Transports: TCP, Detect: detectSOCKS5, FirstBytes: []byte{0x05}},
	Summary: "SOCKS5 greeting with known method codes"}

// NewSOCKS5Protocol routes SOCKS5 clients: version 5, a method count of
// 1–255 and that many known method codes (0x00–0x09 assigned, 0x80–0xFE
// private). The greeting is complete only with every method byte.
func NewSOCKS5Protocol(target string) *Protocol { return build(&socks5Descriptor, target) }

func detectSOCKS5(data []byte) Result {
	if r := firstByteIs(data, 0x05); r != Match {
		return r
	}
	if len(data) < 2 {
		return NeedMore
	}
	n := int(data[1])
	if n == 0 {
		return NoMatch
	}
	for i := 0; i < n; i++ {
		if 2+i >= len(data) {
			return NeedMore
		}
		m := data[2+i]
		if m > 0x09 && (m < 0x80 || m == 0xFF) {
			return NoMatch
		}
	}
	return Match
}
