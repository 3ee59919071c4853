package protocols

func init() { register(socks4Descriptor, NewSOCKS4Protocol) }

var socks4Descriptor = Descriptor{Spec: Spec{Name: "SOCKS4", Transports: TCP, Detect: detectSOCKS4, FirstBytes: []byte{0x04}},
	Summary: "SOCKS4 or SOCKS4a CONNECT/BIND request"}

// NewSOCKS4Protocol routes SOCKS4 and SOCKS4a clients: version 4, command
// CONNECT or BIND, port, IPv4 address, a NUL-terminated printable user id,
// and for SOCKS4a (address 0.0.0.x, x ≠ 0) a NUL-terminated host name.
func NewSOCKS4Protocol(target string) *Protocol { return build(&socks4Descriptor, target) }

const socksMaxField = 255

func detectSOCKS4(data []byte) Result {
	if r := firstByteIs(data, 0x04); r != Match {
		return r
	}
	if len(data) < 2 {
		return NeedMore
	}
	if data[1] != 1 && data[1] != 2 {
		return NoMatch
	}
	if len(data) < 8 {
		return NeedMore
	}
	is4a := data[4] == 0 && data[5] == 0 && data[6] == 0 && data[7] != 0
	i := 8
	r, next := nulTerminated(data, i)
	if r != Match {
		return r
	}
	if !is4a {
		return Match
	}
	r, _ = nulTerminated(data, next)
	return r
}

// nulTerminated checks a printable, NUL-terminated field at data[i:]; next
// is the offset after the NUL.
func nulTerminated(data []byte, i int) (Result, int) {
	for k := i; k < len(data); k++ {
		switch c := data[k]; {
		case c == 0:
			return Match, k + 1
		case c < 0x20 || c > 0x7e || k-i >= socksMaxField:
			return NoMatch, 0
		}
	}
	return NeedMore, 0
}
