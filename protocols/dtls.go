package protocols

import "golang.org/x/crypto/cryptobyte"

func init() { register(dtlsDescriptor, NewDTLSProtocol) }

var dtlsDescriptor = Descriptor{Spec: Spec{Name: "DTLS", Transports: UDP, Datagram: detectDTLS, InspectDatagram: inspectDTLS,
	FirstBytes: []byte{tlsHandshake}}, Routable: SNIKey | ALPNKey,
	Summary: "DTLS handshake records carrying a whole ClientHello (UDP)"}

// NewDTLSProtocol routes DTLS 1.0 to 1.3 (UDP only): a flow's first
// datagrams are handshake records (type 22, version 0xfeff or 0xfefd, epoch
// 0) carrying ClientHello fragments (handshake type 1, DTLS version 0xfeff,
// 0xfefd or 0xfefc). A ClientHello larger than a datagram comes as fragments
// in several datagrams: the detector answers NeedMore until they cover the
// whole message, for at most 8 datagrams and 16 KiB. InspectDatagram reads
// SNI and ALPN from the reassembled ClientHello.
func NewDTLSProtocol(target string) *Protocol { return build(&dtlsDescriptor, target) }

const (
	dtlsRecordHeader    = 13 // type, version (2), epoch (2), sequence number (6), length (2)
	dtlsHandshakeHeader = 12 // type, length (3), message_seq (2), fragment_offset (3), fragment_length (3)
	dtlsMaxClientHello  = 16 << 10
	dtlsMaxDatagrams    = 8
	dtlsMaxFragments    = 64
	// dtlsMinClientHello is tlsMinClientHello with an empty cookie.
	dtlsMinClientHello = tlsMinClientHello + 1
)

// dtlsFragment is one ClientHello fragment: bytes [off, off+len(body)) of a
// message of length bytes.
type dtlsFragment struct {
	length, seq, off int
	body             []byte
}

// dtlsFragments appends to dst (a fixed array's slice: no allocation while it
// has room) the ClientHello fragments of one datagram, which holds whole
// records. ok is false when the datagram is anything else.
func dtlsFragments(dst []dtlsFragment, d []byte) ([]dtlsFragment, bool) {
	if len(d) == 0 {
		return dst, false
	}
	for len(d) > 0 {
		if len(d) < dtlsRecordHeader || d[0] != tlsHandshake || d[1] != 0xfe || (d[2] != 0xff && d[2] != 0xfd) ||
			d[3] != 0 || d[4] != 0 {
			return dst, false
		}
		l := int(d[11])<<8 | int(d[12])
		if l < dtlsHandshakeHeader || dtlsRecordHeader+l > len(d) {
			return dst, false
		}
		rec := d[dtlsRecordHeader : dtlsRecordHeader+l]
		d = d[dtlsRecordHeader+l:]
		for len(rec) > 0 {
			if len(rec) < dtlsHandshakeHeader || rec[0] != tlsClientHello || len(dst) == cap(dst) {
				return dst, false
			}
			f := dtlsFragment{
				length: int(rec[1])<<16 | int(rec[2])<<8 | int(rec[3]),
				seq:    int(rec[4])<<8 | int(rec[5]),
				off:    int(rec[6])<<16 | int(rec[7])<<8 | int(rec[8]),
			}
			n := int(rec[9])<<16 | int(rec[10])<<8 | int(rec[11])
			if n > len(rec)-dtlsHandshakeHeader || f.off+n > f.length {
				return dst, false
			}
			f.body = rec[dtlsHandshakeHeader : dtlsHandshakeHeader+n]
			rec = rec[dtlsHandshakeHeader+n:]
			dst = append(dst, f)
		}
	}
	return dst, true
}

// dtlsClientHello finds the datagrams that carry a whole ClientHello: Match
// with their fragments (in frags, whose storage is the caller's), NeedMore
// while fragments are missing, NoMatch for anything that is not a
// ClientHello flight. A decision on datagrams[:k] is the decision on every
// longer datagrams: nothing after the datagram that completes the message
// is read.
func dtlsClientHello(datagrams [][]byte, frags []dtlsFragment) (Result, []dtlsFragment) {
	if len(datagrams) == 0 {
		return NeedMore, frags
	}
	for k, d := range datagrams {
		if k == dtlsMaxDatagrams {
			return NoMatch, frags
		}
		var ok bool
		if frags, ok = dtlsFragments(frags, d); !ok {
			return NoMatch, frags
		}
		first := frags[0]
		if first.off != 0 || first.seq > 1 || first.length < dtlsMinClientHello || first.length > dtlsMaxClientHello ||
			len(first.body) >= 1 && first.body[0] != 0xfe ||
			len(first.body) >= 2 && first.body[1] != 0xff && first.body[1] != 0xfd && first.body[1] != 0xfc {
			return NoMatch, frags
		}
		for _, f := range frags[1:] {
			if f.length != first.length || f.seq != first.seq {
				return NoMatch, frags
			}
		}
		if dtlsCovered(frags) == first.length {
			return Match, frags
		}
	}
	return NeedMore, frags
}

// dtlsCovered is how many bytes from the message's start the fragments
// cover without a gap, in whatever order and overlap they came.
func dtlsCovered(frags []dtlsFragment) int {
	covered := 0
	for progress := true; progress; {
		progress = false
		for _, f := range frags {
			if f.off <= covered && f.off+len(f.body) > covered {
				covered, progress = f.off+len(f.body), true
			}
		}
	}
	return covered
}

func detectDTLS(datagrams [][]byte) Result {
	var buf [dtlsMaxFragments]dtlsFragment
	r, _ := dtlsClientHello(datagrams, buf[:0])
	return r
}

// inspectDTLS extracts SNI and ALPN from the ClientHello once it is whole.
// Datagrams that are not a ClientHello flight yield ok and no metadata.
func inspectDTLS(datagrams [][]byte) (Metadata, bool) {
	var buf [dtlsMaxFragments]dtlsFragment
	r, frags := dtlsClientHello(datagrams, buf[:0])
	switch r {
	case NeedMore:
		return Metadata{}, false
	case NoMatch:
		return Metadata{}, true
	}
	body := frags[0].body
	if len(body) < frags[0].length {
		// Fragmented: reassemble (the only allocation, once per flow).
		msg := make([]byte, frags[0].length)
		for _, f := range frags {
			copy(msg[f.off:], f.body)
		}
		body = msg
	}
	s := cryptobyte.String(body)
	var sessionID, cookie, suites, methods cryptobyte.String
	if !s.Skip(2+32) || // client_version, random
		!s.ReadUint8LengthPrefixed(&sessionID) ||
		!s.ReadUint8LengthPrefixed(&cookie) ||
		!s.ReadUint16LengthPrefixed(&suites) ||
		!s.ReadUint8LengthPrefixed(&methods) {
		return Metadata{}, true
	}
	return tlsParseExtensions(s, false), true
}
