package protocols

import "bytes"

// Helpers shared by the text protocols.

// requestLine checks a request line (SIP, RTSP): "METHOD SP URI SP VERSION CRLF" with one of methods and
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
