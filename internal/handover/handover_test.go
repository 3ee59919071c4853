package handover

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

// messages are valid messages of every kind, the largest allowed included.
func messages() []Message {
	full := Message{Kind: FDs}
	for i := range MaxFDsPerMessage {
		full.Records = append(full.Records, Record{Type: FDType(1 + i%int(maxFDType)), Name: "127.0.0.1:" + strings.Repeat("9", i%5+1)})
	}
	return []Message{
		{Kind: Hello, Note: "protoplex 1.2.3"},
		{Kind: FDs, Records: []Record{
			{Type: TCPListener, Name: "0.0.0.0:443"},
			{Type: UnixListener, Name: "unix:/run/protoplex.sock"},
			{Type: UDPSocket, Name: ":53", Meta: []byte{1, 2, 3}},
			{Type: TCPConn, Meta: bytes.Repeat([]byte{0xAA}, MaxMeta)},
			{Type: UnixConn},
			{Type: Pipe, Name: strings.Repeat("p", MaxName)},
		}},
		full,
		{Kind: Done, Count: 1 << 20},
		{Kind: Ack, Count: 7},
		{Kind: Refuse, Note: strings.Repeat("why ", MaxNote/4)},
	}
}

// TestRoundTrip: every valid message decodes to itself, and its encoding
// is the only one (Decode then Encode gives the same bytes).
func TestRoundTrip(t *testing.T) {
	for _, m := range messages() {
		b, err := Encode(nil, m)
		if err != nil {
			t.Fatalf("%s: %v", m.Kind, err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", m.Kind, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("%s: decoded %+v", m.Kind, got)
		}
		again, _ := Encode(nil, got)
		if !bytes.Equal(again, b) {
			t.Errorf("%s: encodes two ways", m.Kind)
		}
	}
}

// TestEncodeBounds: a sender cannot write a message the receiver would
// refuse.
func TestEncodeBounds(t *testing.T) {
	many := Message{Kind: FDs, Records: make([]Record, MaxFDsPerMessage+1)}
	for i := range many.Records {
		many.Records[i].Type = Pipe
	}
	big := Message{Kind: FDs}
	for range 5 {
		big.Records = append(big.Records, Record{Type: Pipe, Meta: make([]byte, MaxMeta)})
	}
	for name, tc := range map[string]struct {
		m    Message
		want error
	}{
		"254 descriptors":    {many, ErrBounds},
		"over MaxMessage":    {big, ErrBounds},
		"a long name":        {Message{Kind: FDs, Records: []Record{{Type: Pipe, Name: strings.Repeat("n", MaxName+1)}}}, ErrBounds},
		"long metadata":      {Message{Kind: FDs, Records: []Record{{Type: Pipe, Meta: make([]byte, MaxMeta+1)}}}, ErrBounds},
		"a long note":        {Message{Kind: Refuse, Note: strings.Repeat("n", MaxNote+1)}, ErrBounds},
		"no kind":            {Message{}, ErrFormat},
		"an unknown kind":    {Message{Kind: maxKind + 1}, ErrFormat},
		"an unknown fd type": {Message{Kind: FDs, Records: []Record{{Type: maxFDType + 1}}}, ErrFormat},
		"records in an ack":  {Message{Kind: Ack, Records: []Record{{Type: Pipe}}}, ErrFormat},
	} {
		b, err := Encode([]byte("keep"), tc.m)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
		if string(b) != "keep" {
			t.Errorf("%s: Encode left %d bytes behind", name, len(b))
		}
	}
}

// TestDecodeRejects: each malformed or hostile message is refused with the
// error that says why, and before it sizes anything by a count it claims.
func TestDecodeRejects(t *testing.T) {
	valid, _ := Encode(nil, Message{Kind: FDs, Note: "n", Records: []Record{{Type: TCPListener, Name: ":80", Meta: []byte("m")}}})
	edit := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), valid...)) }
	for name, tc := range map[string]struct {
		b    []byte
		want error
	}{
		"empty":              {nil, ErrMagic},
		"another magic":      {edit(func(b []byte) []byte { b[0] = 'X'; return b }), ErrMagic},
		"version 3":          {edit(func(b []byte) []byte { b[5] = 3; return b }), ErrVersion},
		"version 0":          {edit(func(b []byte) []byte { b[5] = 0; return b }), ErrVersion},
		"version 65535":      {edit(func(b []byte) []byte { b[4], b[5] = 0xff, 0xff; return b }), ErrVersion},
		"version 258":        {edit(func(b []byte) []byte { b[4] = 1; return b }), ErrVersion},
		"flows in version 1": {edit(func(b []byte) []byte { b[5], b[6] = 1, byte(Flows); return b }), ErrFormat}, // no Flows then
		"adopted in version 1": {func() []byte {
			b, _ := Encode(nil, Message{Kind: Adopted, Count: 1})
			b[5] = 1
			return b
		}(), ErrFormat}, // no commit then: an Adopted is no word of format 1
		"a short header":     {valid[:headerLen-1], ErrFormat},
		"header flags":       {edit(func(b []byte) []byte { b[7] = 1; return b }), ErrFormat},
		"kind 0":             {edit(func(b []byte) []byte { b[6] = 0; return b }), ErrFormat},
		"65535 records":      {edit(func(b []byte) []byte { binary.BigEndian.PutUint16(b[8:], 0xFFFF); return b }), ErrBounds},
		"253 records":        {edit(func(b []byte) []byte { binary.BigEndian.PutUint16(b[8:], MaxFDsPerMessage); return b }), ErrFormat},
		"a huge note":        {edit(func(b []byte) []byte { binary.BigEndian.PutUint16(b[10:], 0xFFFF); return b }), ErrBounds},
		"record flags":       {edit(func(b []byte) []byte { b[headerLen+1+1] = 1; return b }), ErrFormat},
		"a record type 0":    {edit(func(b []byte) []byte { b[headerLen+1] = 0; return b }), ErrFormat},
		"a name too long":    {edit(func(b []byte) []byte { binary.BigEndian.PutUint16(b[headerLen+1+2:], MaxName+1); return b }), ErrBounds},
		"a name past end":    {edit(func(b []byte) []byte { binary.BigEndian.PutUint16(b[headerLen+1+2:], 100); return b }), ErrFormat},
		"a cut record":       {valid[:len(valid)-1], ErrFormat},
		"trailing bytes":     {append(append([]byte(nil), valid...), 0), ErrFormat},
		"over MaxMessage":    {append(append([]byte(nil), valid...), make([]byte, MaxMessage)...), ErrBounds},
		"records in a hello": {edit(func(b []byte) []byte { b[6] = byte(Hello); return b }), ErrFormat},
	} {
		if _, err := Decode(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	if _, err := Decode(valid); err != nil {
		t.Fatalf("the valid message: %v", err)
	}
}

// TestDecodeLyingCount: a hostile count costs nothing: a message
// claiming 253 records in 16 bytes is refused before anything is sized
// by the count (only the error is allocated).
func TestDecodeLyingCount(t *testing.T) {
	b, _ := Encode(nil, Message{Kind: Done})
	binary.BigEndian.PutUint16(b[8:], MaxFDsPerMessage)
	const runs = 100
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		if _, err := Decode(b); !errors.Is(err, ErrFormat) {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > 512 {
		t.Errorf("Decode of a lying count allocates %d bytes", per)
	}
}

// FuzzDecode: no input panics, reads past its end or decodes to a message
// that breaks a bound; whatever decodes encodes back to the same bytes.
func FuzzDecode(f *testing.F) {
	for _, m := range messages() {
		b, _ := Encode(nil, m)
		if len(b) < 4096 {
			f.Add(b)
		}
	}
	for _, m := range messagesV1() {
		b, _ := EncodeVersion(nil, 1, m)
		if len(b) < 4096 {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, v, err := DecodeVersion(b)
		if err != nil {
			return
		}
		if v < MinVersion || v > Version {
			t.Fatalf("decoded a message of version %d", v)
		}
		if err := m.check(v); err != nil {
			t.Fatalf("decoded a message over its bounds: %v", err)
		}
		again, err := EncodeVersion(nil, v, m)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("decoded %+v, which encodes to %x (%v), not %x", m, again, err, b)
		}
	})
}

// messagesV1 are messages of every kind format 1 has, as the first
// release wrote them: its hello names no version.
func messagesV1() []Message {
	var out []Message
	for _, m := range messages() {
		if m.Kind <= maxKindV1 {
			out = append(out, m)
		}
	}
	c, _ := EncodeConnVersion(nil, connVersion1, connStates()[1])
	return append(out, Message{Kind: Conns, Records: []Record{{Type: TCPConn, Name: nameClient, Meta: c}, {Type: TCPConn, Name: nameBackend},
		{Type: Pipe, Name: "up.r"}, {Type: Pipe, Name: "up.w"}}})
}

// TestVersionRoundTrip: a message of format 1 decodes to itself, reported
// as version 1, and encodes back to the same bytes; format 2's kinds do
// not exist in format 1, either way.
func TestVersionRoundTrip(t *testing.T) {
	for _, m := range messagesV1() {
		b, err := EncodeVersion(nil, 1, m)
		if err != nil {
			t.Fatalf("%s: %v", m.Kind, err)
		}
		if got := binary.BigEndian.Uint16(b[4:]); got != 1 {
			t.Fatalf("%s: framed as version %d", m.Kind, got)
		}
		got, v, err := DecodeVersion(b)
		if err != nil || v != 1 || !reflect.DeepEqual(got, m) {
			t.Fatalf("%s: decoded %+v, version %d, %v", m.Kind, got, v, err)
		}
		if again, _ := EncodeVersion(nil, v, got); !bytes.Equal(again, b) {
			t.Errorf("%s: encodes two ways", m.Kind)
		}
	}
	for _, k := range []Kind{Flows, Adopted} {
		if _, err := EncodeVersion(nil, 1, Message{Kind: k}); !errors.Is(err, ErrFormat) {
			t.Errorf("a %s in version 1: %v", k, err)
		}
	}
	for _, v := range []uint16{0, Version + 1, 65535} {
		if _, err := EncodeVersion(nil, v, Message{Kind: Ack}); !errors.Is(err, ErrVersion) {
			t.Errorf("version %d written: %v", v, err)
		}
	}
}

// TestNegotiate: the version two processes speak is the lower of both
// highest; a first release's hello (framed 1, Count 0) speaks 1, an
// unreleased format-2 one (framed 2, Count 0) speaks 2, a future one
// naming any higher version speaks this one's; what no release framed is
// refused.
func TestNegotiate(t *testing.T) {
	for _, tc := range []struct {
		frame uint16
		count uint32
		want  uint16
		err   error
	}{
		{1, 0, 1, nil}, // 6abb019's hello
		{1, 1, 1, nil},
		{1, 2, 2, nil},       // this package's hello
		{2, 0, 2, nil},       // a format-2 hello before negotiation
		{1, 3, Version, nil}, // a later release
		{1, 65535, Version, nil},
		{1, 1<<32 - 1, Version, nil},
		{0, 2, 0, ErrVersion},
		{3, 3, 0, ErrVersion},
		{65535, 0, 0, ErrVersion},
	} {
		got, err := Negotiate(Message{Kind: Hello, Count: tc.count}, tc.frame)
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("a hello framed %d naming %d: version %d, %v; want %d, %v", tc.frame, tc.count, got, err, tc.want, tc.err)
		}
	}
	if _, err := Negotiate(Message{Kind: Ack, Count: 2}, 2); !errors.Is(err, ErrFormat) {
		t.Errorf("an ack taken for a hello: %v", err)
	}
}
