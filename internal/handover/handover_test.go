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
		"version 1":          {edit(func(b []byte) []byte { b[5] = 1; return b }), ErrVersion}, // no Adopted: it would close a batch too soon
		"version 3":          {edit(func(b []byte) []byte { b[5] = 3; return b }), ErrVersion},
		"version 0":          {edit(func(b []byte) []byte { b[5] = 0; return b }), ErrVersion},
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
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		if err := m.check(); err != nil {
			t.Fatalf("decoded a message over its bounds: %v", err)
		}
		again, err := Encode(nil, m)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("decoded %+v, which encodes to %x (%v), not %x", m, again, err, b)
		}
	})
}
