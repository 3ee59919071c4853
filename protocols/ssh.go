package protocols

// sshPrefixes are the client identification strings of RFC 4253 §4.2:
// "SSH-2.0-softwareversion", or "SSH-1.99-" from clients that also speak
// SSH 1 (RFC 4253 §5.1). Pure SSH-1 ("SSH-1.5-") is not supported.
var sshPrefixes = [][]byte{[]byte("SSH-2.0-"), []byte("SSH-1.99-")}

func init() {
	register(Descriptor{Name: "SSH", New: NewSSHProtocol, Summary: "SSH-2.0- or SSH-1.99- identification string"})
}

// NewSSHProtocol returns SSH. Clients send their identification string
// first, so it matches as soon as the version prefix is complete.
func NewSSHProtocol(target string) *Protocol {
	return &Protocol{
		Name:       "SSH",
		Target:     target,
		Detect:     detectSSH,
		FirstBytes: []byte{'S'},
	}
}

func detectSSH(data []byte) Result {
	return matchPrefixes(data, sshPrefixes)
}
