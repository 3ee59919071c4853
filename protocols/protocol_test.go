package protocols

import (
	"encoding/binary"
	"regexp"
	"testing"
)

// A user binary protocol declared by byte fields: 0xAA 0x55 + 2-byte length
// + payload.
func newCustomBinary(target string) *Protocol {
	return &Protocol{
		Name:            "CustomBinary",
		Target:          target,
		MatchStartBytes: [][]byte{{0xAA, 0x55}},
		Priority:        7,
		CustomValidator: func(data []byte) bool {
			if len(data) < 4 {
				return false
			}
			length := binary.BigEndian.Uint16(data[2:4])
			return int(length)+4 <= len(data)
		},
	}
}

func TestByteFieldDetector(t *testing.T) {
	custom := newCustomBinary("x:1").Detector()
	checkDetector(t, "custom complete", custom, []byte{0xAA, 0x55, 0, 2, 'h', 'i'}, Match)
	checkDetector(t, "custom short", custom, []byte{0xAA, 0x55, 0, 9, 'h'}, NeedMore)
	checkDetector(t, "custom other", custom, []byte{0xAA, 0x56, 0, 0}, NoMatch)

	window := (&Protocol{MatchBytes: [][]byte{[]byte("MAGIC")}, NoComparisonBeforeBytes: 2, NoComparisonAfterBytes: 10}).Detector()
	checkDetector(t, "window hit", window, []byte("xxMAGICyyyy"), Match)
	checkDetector(t, "window before", window, []byte("MAGICyyyyyyy"), NoMatch)
	checkDetector(t, "window open", window, []byte("xxxx"), NeedMore)

	re := (&Protocol{MatchRegexes: []*regexp.Regexp{regexp.MustCompile(`^HELLO [a-z]+\n`)}}).Detector()
	checkDetector(t, "regex", re, []byte("HELLO world\n"), Match)
	if got := re([]byte("HELLO wor")); got != NeedMore {
		t.Fatalf("regex partial = %v", got)
	}
	if got := (&Protocol{}).Detector()([]byte("x")); got != NoMatch {
		t.Fatalf("empty protocol = %v", got)
	}
}
