package protocols

func init() { register(webSocketDescriptor, NewWebSocketProtocol) }

var webSocketDescriptor = Descriptor{Spec: Spec{Name: "WebSocket", Transports: TCP, Detect: detectWebSocket, FirstBytes: []byte{'G'},
	Inspect: inspectHTTP, Specificity: 1}, Routable: HostKey, Summary: "HTTP/1.1 GET with Upgrade: websocket"}

// NewWebSocketProtocol returns the WebSocket protocol (RFC 6455 §4.1): an
// HTTP/1.1 GET whose header block carries "Upgrade: websocket". It needs the
// whole header block, so it answers NeedMore until the empty line that ends
// it; it outranks HTTP (Specificity 1), which matched on the request line.
func NewWebSocketProtocol(target string) *Protocol { return build(&webSocketDescriptor, target) }

func detectWebSocket(data []byte) Result {
	rl, r := httpScanRequestLine(data, httpGetOnly)
	if r != Match {
		return r
	}
	if rl.minor != '1' {
		return NoMatch // the handshake requires HTTP/1.1
	}
	// Bound the scan: a header block longer than this is not a handshake we
	// will wait for, and the answer must not depend on bytes past it.
	truncated := false
	if len(data) >= httpMaxHeaderBlock {
		data, truncated = data[:httpMaxHeaderBlock], true
	}
	upgrade := false
	for pos := rl.end; ; {
		name, value, next, step := httpNextHeader(data, pos)
		switch step {
		case httpHeaderEnd:
			if upgrade {
				return Match
			}
			return NoMatch
		case httpHeaderMore:
			if truncated {
				return NoMatch
			}
			return NeedMore
		}
		if !upgrade && equalFoldASCII(name, "upgrade") && httpHasToken(value, "websocket") {
			upgrade = true
		}
		pos = next
	}
}
