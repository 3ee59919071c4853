package protocols

import "bytes"

// NewSIPProtocol routes SIP over TCP: a request line METHOD SP sip:/sips:
// URI SP "SIP/2.0".
func NewSIPProtocol(target string) *Protocol {
	return &Protocol{Name: "SIP", Target: target, Detect: detectSIP, FirstBytes: []byte("IRAOBCSNMPUE")}
}

// NewRTSPProtocol routes RTSP: a request line METHOD SP URI SP "RTSP/1.0"
// (the version token tells it from HTTP, which rejects it).
func NewRTSPProtocol(target string) *Protocol {
	return &Protocol{Name: "RTSP", Target: target, Detect: detectRTSP, FirstBytes: []byte("ODSPTRAG")}
}

var sipMethods = []string{"INVITE", "REGISTER", "OPTIONS", "ACK", "BYE", "CANCEL", "SUBSCRIBE", "NOTIFY", "MESSAGE", "INFO", "PRACK", "UPDATE", "REFER", "PUBLISH"}
var rtspMethods = []string{"OPTIONS", "DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "ANNOUNCE", "RECORD", "GET_PARAMETER", "SET_PARAMETER", "REDIRECT"}

func detectSIP(data []byte) Result {
	return requestLine(data, sipMethods, "SIP/2.0", func(uri []byte) bool {
		return bytes.HasPrefix(uri, []byte("sip:")) || bytes.HasPrefix(uri, []byte("sips:"))
	})
}

func detectRTSP(data []byte) Result {
	return requestLine(data, rtspMethods, "RTSP/1.0", func(uri []byte) bool { return len(uri) > 0 })
}

// requestLine checks "METHOD SP URI SP VERSION CRLF" with one of methods and
// exactly version. NeedMore until the line ends (at most 2 KiB).
func requestLine(data []byte, methods []string, version string, uriOK func([]byte) bool) Result {
	sp := bytes.IndexByte(data, ' ')
	if sp < 0 {
		for _, m := range methods {
			if len(data) <= len(m) && m[:len(data)] == string(data) {
				return NeedMore
			}
		}
		return NoMatch
	}
	known := false
	for _, m := range methods {
		if string(data[:sp]) == m {
			known = true
			break
		}
	}
	if !known {
		return NoMatch
	}
	end := bytes.IndexByte(data, '\n')
	if end < 0 {
		if len(data) > 2048 {
			return NoMatch
		}
		// The version is the line's tail: a prefix that can no longer end
		// with it is not decidable yet, so wait for the line.
		return NeedMore
	}
	line := bytes.TrimSuffix(data[sp+1:end], []byte("\r"))
	sp2 := bytes.LastIndexByte(line, ' ')
	if sp2 < 0 || string(line[sp2+1:]) != version || !uriOK(line[:sp2]) {
		return NoMatch
	}
	return Match
}
