package protocols

import "testing"

// rtmpC0C1 is a C0 + C1 as ffmpeg sends it: version 3, time 0, a non-zero
// version field, then 1528 filler bytes.
func rtmpC0C1() string {
	b := make([]byte, rtmpHandshake)
	b[0] = 3
	copy(b[5:9], []byte{9, 0, 124, 2})
	for i := 9; i < len(b); i++ {
		b[i] = byte(i * 7)
	}
	return string(b)
}

// TestRTMP: the C0+C1 handshake, and RDP that starts with the same byte.
func TestRTMP(t *testing.T) {
	runDetectCases(t, detectorOf(t, "rtmp"), []detectCase{
		{"C0 and C1", rtmpC0C1(), Match},
		{"that is RDP", "\x03\x00\x00\x13\x0e\xe0\x00\x00", NoMatch},
		{"C1 incomplete", "\x03\x00\x00\x00", NeedMore},
	})
}
