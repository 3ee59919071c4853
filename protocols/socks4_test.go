package protocols

import "testing"

// TestSOCKS4: SOCKS4 and SOCKS4a requests: commands, user ids, host names.
func TestSOCKS4(t *testing.T) {
	runDetectCases(t, detectorOf(t, "socks4"), []detectCase{
		{"SOCKS4 CONNECT", "\x04\x01\x00\x50\x7f\x00\x00\x02\x00", Match},
		{"SOCKS4a with user id and host", "\x04\x01\x00\x50\x00\x00\x00\x01user\x00www.example.test\x00", Match},
		{"SOCKS4a host not terminated", "\x04\x01\x00\x50\x00\x00\x00\x01\x00www.exam", NeedMore},
		{"unknown command", "\x04\x03\x00\x50", NoMatch},
		{"control byte in user id", "\x04\x01\x00\x50\x7f\x00\x00\x02us\x01", NoMatch},
	})
}
