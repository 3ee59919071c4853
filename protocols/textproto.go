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
		if !equalFoldASCII(data[:n], p[:n]) {
			continue
		}
		if len(data) >= len(p) {
			return Match
		}
		res = NeedMore
	}
	return res
}

// equalFoldASCII reports whether b equals s, ignoring the case of ASCII
// letters (header names, URI schemes, Redis commands, SMTP verbs).
func equalFoldASCII(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		if lowerASCII(b[i]) != lowerASCII(s[i]) {
			return false
		}
	}
	return true
}

func lowerASCII(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// prefixDetector returns a detector for a protocol whose first flight
// starts with one of prefixes: Match once one is complete, NeedMore while
// the data is a beginning of one (see matchPrefixes).
func prefixDetector(prefixes ...string) DetectFunc {
	want := make([][]byte, len(prefixes))
	for i, p := range prefixes {
		want[i] = []byte(p)
	}
	return func(data []byte) Result { return matchPrefixes(data, want) }
}

// firstByteIs answers for a protocol whose first flight starts with b:
// NeedMore before the first byte arrives, Match if it is b, else NoMatch.
// Detectors go on parsing after a Match.
func firstByteIs(data []byte, b byte) Result {
	switch {
	case len(data) == 0:
		return NeedMore
	case data[0] == b:
		return Match
	}
	return NoMatch
}
