package protocols

import "bytes"

// HTTP/1.x detection. The request-line scanner and header walker here are
// shared with the WebSocket and WebDAV detectors.

const (
	// httpMaxRequestLine bounds the request line (CRLF included); longer
	// lines are rejected, as most servers do (nginx and Go use 8 KiB too).
	httpMaxRequestLine = 8 << 10
	// httpMaxHeaderBlock bounds the bytes scanned for headers (request line
	// included) by the WebSocket detector and the Host inspector.
	httpMaxHeaderBlock = 64 << 10
	// httpMaxMethod is the longest known method ("UPDATEREDIRECTREF").
	httpMaxMethod = 17
)

// httpPlainMethods are the methods of RFC 9110 plus PATCH (RFC 5789). PRI
// (the HTTP/2 preface) is deliberately absent.
var httpPlainMethods = []string{
	"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PATCH",
}

// httpMethods is every method the HTTP detector accepts: plain HTTP and the
// WebDAV family, so that an HTTP route also serves WebDAV clients when no
// WebDAV route is configured. Read-only.
var httpMethods = append(append([]string(nil), httpPlainMethods...), webdavMethods...)

// httpGetOnly is the method set of WebSocket handshakes.
var httpGetOnly = []string{"GET"}

func init() { register(httpDescriptor, NewHTTPProtocol) }

var httpDescriptor = Descriptor{Spec: Spec{Name: "HTTP", Transports: TCP, Detect: detectHTTP, FirstBytes: httpFirstBytes(httpMethods),
	Inspect: inspectHTTP}, Routable: HostKey, Summary: "HTTP/1.x request line, WebDAV methods included"}

// NewHTTPProtocol returns the HTTP/1.0 and HTTP/1.1 protocol. It matches as
// soon as the request line is complete and valid; a route with Hosts
// conditions additionally waits for the Host header (see Inspect).
func NewHTTPProtocol(target string) *Protocol { return build(&httpDescriptor, target) }

// NewHTTPWebDAVProtocol returns HTTP with WebDAV methods, which is
// NewHTTPProtocol: the HTTP detector accepts the WebDAV methods too.
func NewHTTPWebDAVProtocol(target string) *Protocol {
	return NewHTTPProtocol(target)
}

func detectHTTP(data []byte) Result {
	_, r := httpScanRequestLine(data, httpMethods)
	return r
}

// httpRequestLine is a parsed request line; slices point into the data.
type httpRequestLine struct {
	method []byte
	target []byte
	minor  byte // '0' or '1' of HTTP/1.x
	end    int  // offset just after the line's LF
}

// httpScanRequestLine parses an HTTP/1.x request line (RFC 9112 §3):
// method SP request-target SP "HTTP/1." DIGIT CRLF, a bare LF accepted as
// line end. The method must be one of methods (case-sensitive, as in HTTP).
// It answers Match once the line is complete and valid, NoMatch at the first
// byte that makes it impossible, NeedMore otherwise. HTTP/0.9 (no version)
// is not recognised.
func httpScanRequestLine(data []byte, methods []string) (httpRequestLine, Result) {
	var rl httpRequestLine
	// Looking at no more than the limit keeps the answer a function of the
	// first httpMaxRequestLine bytes, so it is the same for every longer
	// prefix.
	truncated := false
	if len(data) >= httpMaxRequestLine {
		data, truncated = data[:httpMaxRequestLine], true
	}
	more := NeedMore
	if truncated {
		more = NoMatch
	}

	// Method token.
	i := 0
	for ; i < len(data) && data[i] != ' '; i++ {
		if c := data[i]; i >= httpMaxMethod || !(c >= 'A' && c <= 'Z' || c == '-') {
			return rl, NoMatch
		}
	}
	if !httpAnyHasPrefix(methods, data[:i]) {
		return rl, NoMatch
	}
	if i == len(data) {
		return rl, more
	}
	if !httpAnyEqual(methods, data[:i]) {
		return rl, NoMatch // includes an empty method
	}
	rl.method = data[:i]

	// Request target: origin-form "/...", asterisk-form "*", absolute-form
	// "http://..." or authority-form "host:port"; any visible byte (raw
	// UTF-8 included, as clients send it), no controls, no spaces.
	start := i + 1
	j := start
	for ; j < len(data) && data[j] != ' '; j++ {
		c := data[j]
		if c < 0x21 || c == 0x7f {
			return rl, NoMatch
		}
		if j == start && !(c == '/' || c == '*' || c == '[' || httpIsAlnum(c)) {
			return rl, NoMatch
		}
	}
	if j == len(data) {
		return rl, more
	}
	if j == start {
		return rl, NoMatch // two spaces
	}
	rl.target = data[start:j]

	// Version and line end.
	const version = "HTTP/1."
	k := j + 1
	for n := 0; n < len(version); n, k = n+1, k+1 {
		if k == len(data) {
			return rl, more
		}
		if data[k] != version[n] {
			return rl, NoMatch
		}
	}
	if k == len(data) {
		return rl, more
	}
	if rl.minor = data[k]; rl.minor != '0' && rl.minor != '1' {
		return rl, NoMatch
	}
	k++
	if k == len(data) {
		return rl, more
	}
	if data[k] == '\r' {
		k++
		if k == len(data) {
			return rl, more
		}
	}
	if data[k] != '\n' {
		return rl, NoMatch
	}
	rl.end = k + 1
	return rl, Match
}

// httpHeaderStep says what httpNextHeader found.
type httpHeaderStep uint8

const (
	httpHeaderField httpHeaderStep = iota // a complete header line (name may be nil if malformed)
	httpHeaderEnd                         // the empty line ending the header block
	httpHeaderMore                        // the line is not complete yet
)

// httpNextHeader reads the header line starting at data[pos:]. Lines end in
// CRLF or LF; values are returned without surrounding spaces and tabs. A line
// without a colon, or an obsolete folded continuation line, is returned
// with a nil name so callers skip it.
func httpNextHeader(data []byte, pos int) (name, value []byte, next int, step httpHeaderStep) {
	nl := bytes.IndexByte(data[pos:], '\n')
	if nl < 0 {
		return nil, nil, pos, httpHeaderMore
	}
	line := data[pos : pos+nl]
	next = pos + nl + 1
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if len(line) == 0 {
		return nil, nil, next, httpHeaderEnd
	}
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 || line[0] == ' ' || line[0] == '\t' {
		return nil, nil, next, httpHeaderField
	}
	return line[:colon], httpTrimOWS(line[colon+1:]), next, httpHeaderField
}

// inspectHTTP extracts the request's host for Hosts route conditions: the
// authority of an absolute-form or CONNECT target (which takes precedence
// over Host, RFC 9112 §3.2.2), else the first Host header. ok is false until
// the host is known or the header block ended without one.
func inspectHTTP(data []byte) (Metadata, bool) {
	rl, r := httpScanRequestLine(data, httpMethods)
	switch r {
	case NeedMore:
		return Metadata{}, false
	case NoMatch:
		return Metadata{}, true
	}
	if auth, ok := httpTargetAuthority(rl); ok {
		return Metadata{Host: httpNormalizeHost(auth)}, true
	}
	truncated := false
	if len(data) >= httpMaxHeaderBlock {
		data, truncated = data[:httpMaxHeaderBlock], true
	}
	for pos := rl.end; ; {
		name, value, next, step := httpNextHeader(data, pos)
		switch step {
		case httpHeaderEnd:
			return Metadata{}, true
		case httpHeaderMore:
			// Beyond the bound the answer is "no Host", for every longer
			// prefix alike.
			return Metadata{}, truncated
		}
		if equalFoldASCII(name, "host") {
			return Metadata{Host: httpNormalizeHost(value)}, true
		}
		pos = next
	}
}

// httpTargetAuthority returns the authority of an absolute-form target
// ("http://user@host:port/path") or of a CONNECT target ("host:port").
func httpTargetAuthority(rl httpRequestLine) ([]byte, bool) {
	t := rl.target
	if string(rl.method) == "CONNECT" {
		return t, true
	}
	var rest []byte
	switch {
	case len(t) >= 7 && equalFoldASCII(t[:7], "http://"):
		rest = t[7:]
	case len(t) >= 8 && equalFoldASCII(t[:8], "https://"):
		rest = t[8:]
	default:
		return nil, false
	}
	if end := bytes.IndexAny(rest, "/?#"); end >= 0 {
		rest = rest[:end]
	}
	if at := bytes.LastIndexByte(rest, '@'); at >= 0 {
		rest = rest[at+1:]
	}
	return rest, true
}

// httpNormalizeHost turns a Host value into Metadata.Host: port removed,
// IPv6 brackets removed ("[::1]:8080" -> "::1"), then NormalizeName.
func httpNormalizeHost(h []byte) string {
	h = httpTrimOWS(h)
	if len(h) > 0 && h[0] == '[' {
		if end := bytes.IndexByte(h, ']'); end > 0 {
			h = h[1:end]
		}
	} else if colon := bytes.IndexByte(h, ':'); colon >= 0 && bytes.IndexByte(h[colon+1:], ':') < 0 {
		// One colon: host:port. Several: a bare IPv6 address, kept whole.
		h = h[:colon]
	}
	return NormalizeName(string(h))
}

// httpFirstBytes lists the first letters of methods, for the first-byte index.
func httpFirstBytes(methods []string) []byte {
	var seen [256]bool
	var out []byte
	for _, m := range methods {
		if c := m[0]; !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out
}

// httpAnyHasPrefix and httpAnyEqual compare the first byte before the rest:
// that rejects most of the list without a string comparison.
func httpAnyHasPrefix(list []string, prefix []byte) bool {
	if len(prefix) == 0 {
		return true
	}
	for _, s := range list {
		if len(prefix) <= len(s) && s[0] == prefix[0] && s[:len(prefix)] == string(prefix) {
			return true
		}
	}
	return false
}

func httpAnyEqual(list []string, b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, s := range list {
		if len(s) == len(b) && s[0] == b[0] && s == string(b) {
			return true
		}
	}
	return false
}

// httpHasToken reports whether the comma-separated list v holds token
// (lower-case), ignoring case, spaces and a "/version" suffix (RFC 9110
// §7.8: Upgrade: websocket, h2c/1).
func httpHasToken(v []byte, token string) bool {
	for len(v) > 0 {
		var item []byte
		if comma := bytes.IndexByte(v, ','); comma >= 0 {
			item, v = v[:comma], v[comma+1:]
		} else {
			item, v = v, nil
		}
		item = httpTrimOWS(item)
		if slash := bytes.IndexByte(item, '/'); slash >= 0 {
			item = item[:slash]
		}
		if equalFoldASCII(item, token) {
			return true
		}
	}
	return false
}

func httpTrimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func httpIsAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
