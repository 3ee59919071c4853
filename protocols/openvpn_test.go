package protocols

import "testing"

// TestOpenVPN: client hard resets, and other length-framed data.
func TestOpenVPN(t *testing.T) {
	runDetectCases(t, detectorOf(t, "openvpn"), []detectCase{
		// P_CONTROL_HARD_RESET_CLIENT_V2, no tls-auth: op, session id, ack len, packet id
		{"V2", "\x00\x0e\x38\x01\x02\x03\x04\x05\x06\x07\x08\x00\x00\x00\x00\x00", Match},
		{"V3", "\x00\x0e\x50\x01\x02\x03\x04\x05\x06\x07\x08\x00\x00\x00\x00\x00", Match},
		{"key id 1", "\x00\x0e\x39", NoMatch},
		{"too short: PostgreSQL-like", "\x00\x08\x04\xd2\x16\x2f", NoMatch},
	})
}
