package protocols

import "bytes"

func init() { register(sipDescriptor, NewSIPProtocol) }

var sipDescriptor = Descriptor{Spec: Spec{Name: "SIP", Transports: TCP | UDP, Detect: detectSIP, Datagram: detectSIPDatagram,
	FirstBytes: []byte("IRAOBCSNMPUE")}, Summary: "SIP/2.0 request line with a sip: or sips: URI (UDP: or a status line)"}

// NewSIPProtocol routes SIP over TCP and UDP: a request line METHOD SP
// sip:/sips: URI SP "SIP/2.0". Over UDP the first datagram holds the whole
// line, and may be a status line "SIP/2.0" SP 3-digit code SP reason
// instead: a peer answering a request that reached it from another address.
func NewSIPProtocol(target string) *Protocol { return build(&sipDescriptor, target) }

var sipMethods = []string{"INVITE", "REGISTER", "OPTIONS", "ACK", "BYE", "CANCEL", "SUBSCRIBE", "NOTIFY", "MESSAGE", "INFO", "PRACK", "UPDATE", "REFER", "PUBLISH"}

func detectSIPDatagram(datagrams [][]byte) Result {
	if len(datagrams) == 0 {
		return NeedMore
	}
	d := datagrams[0]
	if bytes.HasPrefix(d, []byte("SIP/2.0 ")) {
		return sipStatusLine(d[len("SIP/2.0 "):])
	}
	if detectSIP(d) == Match {
		return Match
	}
	return NoMatch // the datagram is all of the line there is
}

// sipStatusLine checks the rest of a status line after "SIP/2.0 ": a code
// 100–699, a space, a reason of printable text, CRLF or LF.
func sipStatusLine(b []byte) Result {
	end := bytes.IndexByte(b, '\n')
	if end < 4 || b[0] < '1' || b[0] > '6' || b[1] < '0' || b[1] > '9' || b[2] < '0' || b[2] > '9' || b[3] != ' ' {
		return NoMatch
	}
	for _, c := range bytes.TrimSuffix(b[4:end], []byte("\r")) {
		if c < ' ' && c != '\t' || c == 0x7f {
			return NoMatch
		}
	}
	return Match
}

func detectSIP(data []byte) Result {
	return requestLine(data, sipMethods, "SIP/2.0", func(uri []byte) bool {
		return bytes.HasPrefix(uri, []byte("sip:")) || bytes.HasPrefix(uri, []byte("sips:"))
	})
}
