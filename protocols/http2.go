package protocols

// http2Preface is the client connection preface of HTTP/2 with prior
// knowledge (RFC 9113 §3.4), sent by h2c clients without an Upgrade.
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// detectHTTP2 matches the complete 24-byte preface.
var detectHTTP2 = prefixDetector(http2Preface)

func init() { register(http2Descriptor, NewHTTP2Protocol) }

var http2Descriptor = Descriptor{Spec: Spec{Name: "HTTP2", Transports: TCP, Detect: detectHTTP2, FirstBytes: []byte{'P'}},
	Summary: "cleartext HTTP/2 prior-knowledge preface"}

// NewHTTP2Protocol returns cleartext HTTP/2 with prior knowledge. (HTTP/2 over
// TLS is TLS with ALPN "h2": route it with NewTLSProtocol and ALPN.)
func NewHTTP2Protocol(target string) *Protocol { return build(&http2Descriptor, target) }
