package protocols

// NewSMTPProtocol routes SMTP. The client normally waits for the server's
// 220 greeting, so the protocol is chosen when the client stays silent
// (server-first); a client that speaks first with EHLO or HELO is matched too.
func NewSMTPProtocol(target string) *Protocol {
	return &Protocol{
		Name: "SMTP", Target: target, Detect: detectSMTP,
		FirstBytes:          []byte("EeHh"),
		EstablishConnection: []EstablishConnection{{}},
	}
}

func detectSMTP(data []byte) Result {
	return matchPrefixesFold(data, "ehlo ", "helo ")
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

// matchPrefixesFold is matchPrefixes for ASCII, case-insensitive;
// prefixes are lower case.
func matchPrefixesFold(data []byte, prefixes ...string) Result {
	res := NoMatch
	for _, p := range prefixes {
		n := min(len(data), len(p))
		if !httpEqualFold(data[:n], p[:n]) {
			continue
		}
		if len(data) >= len(p) {
			return Match
		}
		res = NeedMore
	}
	return res
}
