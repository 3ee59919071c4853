package protocols

// http2Preface is the client connection preface of HTTP/2 with prior
// knowledge (RFC 9113 §3.4), sent by h2c clients without an Upgrade.
var http2Preface = [][]byte{[]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")}

func init() {
	register(Descriptor{Name: "HTTP2", New: NewHTTP2Protocol, Summary: "cleartext HTTP/2 prior-knowledge preface"})
}

// NewHTTP2Protocol returns cleartext HTTP/2 with prior knowledge. (HTTP/2 over
// TLS is TLS with ALPN "h2": route it with NewTLSProtocol and ALPN.)
func NewHTTP2Protocol(target string) *Protocol {
	return &Protocol{
		Name:       "HTTP2",
		Target:     target,
		Detect:     detectHTTP2,
		FirstBytes: []byte{'P'},
	}
}

// detectHTTP2 matches the complete 24-byte preface.
func detectHTTP2(data []byte) Result {
	return matchPrefixes(data, http2Preface)
}
