package protocols

import "testing"

// TestRTSP: RTSP request lines, and HTTP ones that are not.
func TestRTSP(t *testing.T) {
	runDetectCases(t, detectorOf(t, "rtsp"), []detectCase{
		{"OPTIONS", "OPTIONS rtsp://127.0.0.1:8554/stream RTSP/1.0\r\nCSeq: 1\r\n", Match},
		{"DESCRIBE", "DESCRIBE rtsp://x/s RTSP/1.0\r\n", Match},
		{"HTTP version", "OPTIONS * HTTP/1.1\r\n", NoMatch},
	})
}
