package protocols

import "testing"

// TestSTUN: STUN messages over TCP: the magic cookie and length rules.
func TestSTUN(t *testing.T) {
	runDetectCases(t, detectorOf(t, "stun"), []detectCase{
		// STUN Binding request over TCP (RFC 8489): type 0x0001, length 0, cookie, transaction id
		{"Binding request", "\x00\x01\x00\x00\x21\x12\xa4\x42abcdefghijkl", Match},
		{"wrong magic cookie", "\x00\x01\x00\x08\x21\x12\xa4\x43", NoMatch},
		{"length not a multiple of 4", "\x00\x01\x00\x03", NoMatch},
	})
}
