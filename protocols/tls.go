package protocols

import "golang.org/x/crypto/cryptobyte"

const (
	tlsRecordHeader   = 5       // type, version (2), length (2)
	tlsMaxRecord      = 1 << 14 // TLSPlaintext.length limit (RFC 8446 §5.1)
	tlsHandshake      = 0x16    // ContentType handshake
	tlsClientHello    = 1       // HandshakeType client_hello
	tlsMaxClientHello = 64 << 10
	// tlsMinClientHello is the smallest ClientHello body: version (2),
	// random (32), empty session id (1), one cipher suite (2+2), one
	// compression method (1+1).
	tlsMinClientHello = 41

	tlsExtServerName = 0
	tlsExtALPN       = 16
)

func init() { register(tlsDescriptor, NewTLSProtocol) }

var tlsDescriptor = Descriptor{Spec: Spec{Name: "TLS", Transports: TCP, Detect: detectTLS, FirstBytes: []byte{tlsHandshake}, Inspect: inspectTLS},
	Routable: SNIKey | ALPNKey, Summary: "TLS record carrying a ClientHello"}

// NewTLSProtocol returns TLS (SSL 3.0 to TLS 1.3). It matches as soon as the
// first record header and the ClientHello's handshake header and version are
// valid; Inspect parses the whole ClientHello for SNI and ALPN routes.
//
// SSLv2-compatible ClientHellos (first byte 0x80.., RFC 6101 appendix E) are
// not recognised: SSL 2 is prohibited (RFC 6176), no current client sends
// them, and their 2-byte header would make arbitrary binary data look like
// TLS.
func NewTLSProtocol(target string) *Protocol { return build(&tlsDescriptor, target) }

func detectTLS(data []byte) Result {
	// handshake type (1), length (3), client_version (2)
	var hs [6]byte
	n, r := tlsReadHandshake(data, hs[:], len(hs))
	switch {
	case n >= 1 && hs[0] != tlsClientHello,
		n >= 4 && int(hs[1])<<16|int(hs[2])<<8|int(hs[3]) < tlsMinClientHello,
		n >= 5 && hs[4] != 3,
		n >= 6 && hs[5] > 4:
		return NoMatch
	}
	return r
}

// tlsReadHandshake reassembles the handshake-layer bytes carried by the
// consecutive handshake records at the start of data (a handshake message
// may span records; RFC 8446 §5.1) and copies the first want of them into dst
// (dst may be nil to only count). It returns how many bytes it found and
// Match once it has want of them, NeedMore if data ends first, NoMatch at a
// record header that is not a valid handshake record.
func tlsReadHandshake(data, dst []byte, want int) (int, Result) {
	n, pos := 0, 0
	for n < want {
		h := data[pos:]
		switch {
		case len(h) == 0:
			return n, NeedMore
		case h[0] != tlsHandshake,
			len(h) > 1 && h[1] != 3,
			len(h) > 2 && h[2] > 4:
			return n, NoMatch
		case len(h) < tlsRecordHeader:
			return n, NeedMore
		}
		l := int(h[3])<<8 | int(h[4])
		if l == 0 || l > tlsMaxRecord {
			return n, NoMatch // empty handshake fragments are forbidden
		}
		frag := h[tlsRecordHeader:]
		if len(frag) > l {
			frag = frag[:l]
		}
		if len(frag) > want-n {
			frag = frag[:want-n]
		}
		if dst != nil {
			copy(dst[n:], frag)
		}
		n += len(frag)
		if n == want {
			break
		}
		if len(frag) < l {
			return n, NeedMore
		}
		pos += tlsRecordHeader + l
	}
	return n, Match
}

// inspectTLS extracts SNI and ALPN from the ClientHello. ok is false until the
// whole ClientHello has arrived (or its first tlsMaxClientHello bytes, for a
// larger one). Data that is not a ClientHello yields ok and no metadata.
func inspectTLS(data []byte) (Metadata, bool) {
	var hdr [4]byte
	n, r := tlsReadHandshake(data, hdr[:], len(hdr))
	if r == NoMatch || (n >= 1 && hdr[0] != tlsClientHello) {
		return Metadata{}, true
	}
	if r == NeedMore {
		return Metadata{}, false
	}
	length := int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
	truncated := length > tlsMaxClientHello
	if truncated {
		length = tlsMaxClientHello
	}
	total := len(hdr) + length

	var msg []byte
	if rec := int(data[3])<<8 | int(data[4]); rec >= total {
		// Common case: the whole ClientHello is in the first record.
		if len(data) < tlsRecordHeader+total {
			return Metadata{}, false
		}
		msg = data[tlsRecordHeader : tlsRecordHeader+total]
	} else {
		// Count first so that incomplete rounds do not allocate.
		switch _, r := tlsReadHandshake(data, nil, total); r {
		case NeedMore:
			return Metadata{}, false
		case NoMatch:
			return Metadata{}, true
		}
		msg = make([]byte, total)
		tlsReadHandshake(data, msg, total)
	}
	return tlsParseClientHello(msg[len(hdr):], truncated), true
}

// tlsParseClientHello reads server_name and ALPN from a ClientHello body
// (RFC 8446 §4.1.2, RFC 6066 §3, RFC 7301 §3.1). Every read is bounds
// checked; on malformed input it returns what it found before the fault.
// truncated says body is only the beginning of a larger ClientHello: then
// the extension block may end early and complete extensions are used.
func tlsParseClientHello(body []byte, truncated bool) Metadata {
	var md Metadata
	s := cryptobyte.String(body)
	var sessionID, suites, methods cryptobyte.String
	if !s.Skip(2+32) || // legacy_version, random
		!s.ReadUint8LengthPrefixed(&sessionID) ||
		!s.ReadUint16LengthPrefixed(&suites) ||
		!s.ReadUint8LengthPrefixed(&methods) {
		return md
	}
	return tlsParseExtensions(s, truncated)
}

// tlsParseExtensions reads server_name and ALPN from the extension block
// that ends a ClientHello (TLS or DTLS): s starts at the block's 2-byte
// length. truncated is as for tlsParseClientHello.
func tlsParseExtensions(s cryptobyte.String, truncated bool) Metadata {
	var md Metadata
	var extLen uint16
	if !s.ReadUint16(&extLen) {
		return md // no extensions (SSL 3.0 style)
	}
	exts := s
	if len(exts) > int(extLen) {
		exts = exts[:extLen]
	} else if len(exts) < int(extLen) && !truncated {
		return md
	}
	for !exts.Empty() {
		var typ uint16
		var ext cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&ext) {
			break
		}
		switch typ {
		case tlsExtServerName:
			if md.SNI == "" {
				md.SNI = tlsServerName(ext)
			}
		case tlsExtALPN:
			if md.ALPN == nil {
				md.ALPN = tlsALPN(ext)
			}
		}
	}
	return md
}

// tlsServerName returns the first host_name of a server_name extension.
func tlsServerName(ext cryptobyte.String) string {
	var list cryptobyte.String
	if !ext.ReadUint16LengthPrefixed(&list) {
		return ""
	}
	for !list.Empty() {
		var typ uint8
		var name cryptobyte.String
		if !list.ReadUint8(&typ) || !list.ReadUint16LengthPrefixed(&name) {
			return ""
		}
		if typ == 0 && len(name) > 0 { // host_name
			return NormalizeName(string(name))
		}
	}
	return ""
}

// tlsALPN returns the protocol names of an ALPN extension, in client order.
func tlsALPN(ext cryptobyte.String) []string {
	var list cryptobyte.String
	if !ext.ReadUint16LengthPrefixed(&list) {
		return nil
	}
	var out []string
	for !list.Empty() {
		var proto cryptobyte.String
		if !list.ReadUint8LengthPrefixed(&proto) {
			break
		}
		if len(proto) > 0 {
			out = append(out, string(proto))
		}
	}
	return out
}
