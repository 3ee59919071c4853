package protocols

import "testing"

// TestPostgreSQL: StartupMessage, SSLRequest, GSSENCRequest and CancelRequest, and near misses.
func TestPostgreSQL(t *testing.T) {
	runDetectCases(t, detectorOf(t, "postgresql"), []detectCase{
		{"SSLRequest", "\x00\x00\x00\x08\x04\xd2\x16\x2f", Match},
		{"GSSENCRequest", "\x00\x00\x00\x08\x04\xd2\x16\x30", Match},
		{"CancelRequest", "\x00\x00\x00\x10\x04\xd2\x16\x2e", Match},
		{"StartupMessage 3.0", "\x00\x00\x00\x35\x00\x03\x00\x00user", Match},
		{"SSLRequest with a wrong length", "\x00\x00\x00\x09\x04\xd2\x16\x2f", NoMatch},
		{"length over 10000", "\x00\x01\x00\x35\x00\x03\x00\x00", NoMatch},
		{"protocol 2.0", "\x00\x00\x00\x35\x00\x02\x00\x00", NoMatch},
	})
}
