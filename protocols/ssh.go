package protocols

// detectSSH matches the client identification strings of RFC 4253 §4.2:
// "SSH-2.0-softwareversion", or "SSH-1.99-" from clients that also speak
// SSH 1 (RFC 4253 §5.1). Pure SSH-1 ("SSH-1.5-") is not supported.
var detectSSH = prefixDetector("SSH-2.0-", "SSH-1.99-")

func init() { register(sshDescriptor, NewSSHProtocol) }

var sshDescriptor = Descriptor{Spec: Spec{Name: "SSH", Transports: TCP, Detect: detectSSH, FirstBytes: []byte{'S'}},
	Summary: "SSH-2.0- or SSH-1.99- identification string"}

// NewSSHProtocol returns SSH. Clients send their identification string
// first, so it matches as soon as the version prefix is complete.
func NewSSHProtocol(target string) *Protocol { return build(&sshDescriptor, target) }
