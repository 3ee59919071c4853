package protocols

import "testing"

// TestDNS: DNS-over-TCP queries, and responses and malformed queries that are not.
func TestDNS(t *testing.T) {
	runDetectCases(t, detectorOf(t, "dns"), []detectCase{
		// dig +tcp example.test A (RFC 1035 §4.2.2 framing)
		{"A query", "\x00\x35\x62\xd1\x01\x20\x00\x01\x00\x00\x00\x00\x00\x01\x07example\x04test\x00\x00\x01\x00\x01", Match},
		{"a response (QR=1)", "\x00\x1d\x62\xd1\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00", NoMatch},
		{"no question", "\x00\x1d\x62\xd1\x01\x20\x00\x00\x00\x00\x00\x00\x00\x00", NoMatch},
		{"label of 64", "\x00\x11\x62\xd1\x01\x20\x00\x01\x00\x00\x00\x00\x00\x00\x40", NoMatch},
	})
}
