package protocols

import "testing"

// TestSIP: SIP request lines, and RTSP and HTTP ones that are not.
func TestSIP(t *testing.T) {
	runDetectCases(t, detectorOf(t, "sip"), []detectCase{
		{"OPTIONS", "OPTIONS sip:user@example.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1\r\n", Match},
		{"INVITE sips:", "INVITE sips:bob@example.test SIP/2.0\r\n", Match},
		{"RTSP request", "OPTIONS rtsp://x/ RTSP/1.0\r\n", NoMatch},
		{"HTTP request", "GET / HTTP/1.1\r\n", NoMatch},
	})
}
