package protocols

import "testing"

// TestSOCKS5: SOCKS5 greetings: method counts and method codes.
func TestSOCKS5(t *testing.T) {
	runDetectCases(t, detectorOf(t, "socks5"), []detectCase{
		{"two methods", "\x05\x02\x00\x01", Match},
		{"one method", "\x05\x01\x02", Match},
		{"no methods", "\x05\x00", NoMatch},
		{"unassigned method", "\x05\x02\x00\x42", NoMatch},
		{"methods missing", "\x05\x03\x00", NeedMore},
	})
}
