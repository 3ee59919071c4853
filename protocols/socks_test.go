package protocols

import "testing"

// TestSOCKS: the generic SOCKS route takes SOCKS4/4a and SOCKS5 clients
// alike, as their own detectors decide them.
func TestSOCKS(t *testing.T) {
	runDetectCases(t, detectorOf(t, "socks"), []detectCase{
		{"SOCKS4 CONNECT", "\x04\x01\x00\x50\x7f\x00\x00\x02\x00", Match},
		{"SOCKS5 greeting", "\x05\x01\x00", Match},
		{"SOCKS5 without methods", "\x05\x00", NoMatch},
		{"SOCKS4 unknown command", "\x04\x03\x00\x50", NoMatch},
		{"neither", "\x06\x01\x00", NoMatch},
		{"empty", "", NeedMore},
	})
}
