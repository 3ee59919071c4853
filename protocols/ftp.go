package protocols

func init() {
	register(Descriptor{Name: "FTP", New: NewFTPProtocol, ServerFirst: true, Summary: "chosen on client silence only"})
}

// NewFTPProtocol routes FTP, a server-speaks-first protocol: clients send
// nothing before the server's 220 greeting, so it is chosen on silence. Its
// detector never matches client bytes: "USER" or "AUTH" first would be
// ambiguous with other text protocols (Redis has AUTH).
func NewFTPProtocol(target string) *Protocol {
	return &Protocol{
		Name: "FTP", Target: target,
		Detect:              func([]byte) Result { return NoMatch },
		FirstBytes:          []byte{0x00}, // never asked in practice: it only wins on silence
		EstablishConnection: []EstablishConnection{{}},
	}
}
