package protocols

import (
	"encoding/binary"
	"regexp"
	"testing"
)

// TestByteFieldDetector: each byte field alone and combined, on complete
// data, its beginnings and near misses (checkDetector: also every prefix).
func TestByteFieldDetector(t *testing.T) {
	// A 2-byte length after the magic, then that many payload bytes.
	lengthComplete := func(data []byte) bool {
		return len(data) >= 4 && int(binary.BigEndian.Uint16(data[2:4]))+4 <= len(data)
	}
	for name, c := range map[string]struct {
		p     Protocol
		given map[string]Result // data → verdict
	}{
		"start bytes and validator": {
			Protocol{MatchStartBytes: [][]byte{{0xAA, 0x55}}, CustomValidator: lengthComplete},
			map[string]Result{"\xaa\x55\x00\x02hi": Match, "\xaa\x55\x00\x09h": NeedMore, "\xaa\x56\x00\x00": NoMatch},
		},
		"window [2, 10)": {
			Protocol{MatchBytes: [][]byte{[]byte("MAGIC")}, NoComparisonBeforeBytes: 2, NoComparisonAfterBytes: 10},
			map[string]Result{"xxMAGICyyyy": Match, "MAGICyyyyyyy": NoMatch, "xxxx": NeedMore},
		},
		"regex": {
			Protocol{MatchRegexes: []*regexp.Regexp{regexp.MustCompile(`^HELLO [a-z]+\n`)}},
			map[string]Result{"HELLO world\n": Match, "HELLO wor": NeedMore},
		},
	} {
		detect := c.p.Detector()
		for data, want := range c.given {
			checkDetector(t, name, detect, []byte(data), want)
		}
	}
	if got := (&Protocol{}).Detector()([]byte("x")); got != NoMatch {
		t.Fatalf("empty protocol = %v", got)
	}
}
