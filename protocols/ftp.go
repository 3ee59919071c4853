package protocols

func init() { register(ftpDescriptor, NewFTPProtocol) }

var ftpDescriptor = Descriptor{Spec: Spec{Name: "FTP", Transports: TCP, Detect: detectFTP, FirstBytes: []byte{0x00}, ServerFirst: true},
	Summary: "chosen on client silence only"}

// NewFTPProtocol routes FTP, a server-speaks-first protocol: clients send
// nothing before the server's 220 greeting, so it is chosen on silence. Its
// detector never matches client bytes: "USER" or "AUTH" first would be
// ambiguous with other text protocols (Redis has AUTH).
func NewFTPProtocol(target string) *Protocol { return build(&ftpDescriptor, target) }

// detectFTP rejects every client byte: FTP is chosen on silence only.
func detectFTP([]byte) Result { return NoMatch }
