package protocols

func init() {
	register(Descriptor{Name: "SOCKS", New: NewSOCKSProtocol, Summary: "SOCKS4/4a or SOCKS5 greeting"})
}

// NewSOCKSProtocol routes both SOCKS4/4a and SOCKS5 to one target.
func NewSOCKSProtocol(target string) *Protocol {
	return &Protocol{Name: "SOCKS", Target: target, FirstBytes: []byte{0x04, 0x05}, Detect: func(data []byte) Result {
		if len(data) > 0 && data[0] == 0x04 {
			return detectSOCKS4(data)
		}
		return detectSOCKS5(data)
	}}
}
