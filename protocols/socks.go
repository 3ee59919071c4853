package protocols

func init() { register(socksDescriptor, NewSOCKSProtocol) }

var socksDescriptor = Descriptor{Spec: Spec{Name: "SOCKS", Transports: TCP, Detect: detectSOCKS, FirstBytes: []byte{0x04, 0x05}},
	Summary: "SOCKS4/4a or SOCKS5 greeting"}

// NewSOCKSProtocol routes both SOCKS4/4a and SOCKS5 to one target.
func NewSOCKSProtocol(target string) *Protocol { return build(&socksDescriptor, target) }

// detectSOCKS is detectSOCKS4 for a first byte 4, else detectSOCKS5.
func detectSOCKS(data []byte) Result {
	if len(data) > 0 && data[0] == 0x04 {
		return detectSOCKS4(data)
	}
	return detectSOCKS5(data)
}
