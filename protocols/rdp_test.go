package protocols

import "testing"

// TestRDP: X.224 Connection Requests in TPKT, and other 0x03-first data.
func TestRDP(t *testing.T) {
	runDetectCases(t, detectorOf(t, "rdp"), []detectCase{
		// mstsc/xfreerdp Connection Request: TPKT len 19, X.224 CR with an RDP negotiation request
		{"Connection Request", "\x03\x00\x00\x13\x0e\xe0\x00\x00\x00\x00\x00\x01\x00\x08\x00\x03\x00\x00\x00", Match},
		{"a connection confirm is the server's", "\x03\x00\x00\x13\x0e\xd0", NoMatch},
		{"RTMP C1 with time 0", "\x03\x00\x00\x00\x00\x00", NoMatch},
	})
}
