package handover

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// connStates are valid states, the largest allowed included.
func connStates() []ConnState {
	alpn := make([]string, MaxALPN)
	for i := range alpn {
		alpn[i] = strings.Repeat("h", MaxALPNName)
	}
	return []ConnState{
		{},
		{Client: "192.0.2.7:40000", Protocol: "ssh", Route: "ssh", Target: "127.0.0.1:22",
			Age: time.Hour, IdleFor: time.Second, Idle: 2 * time.Hour,
			Up: DirState{N: 1 << 40, Pipe: true, Pending: 65536, RDHUP: true}, Down: DirState{N: 3, EOF: true, Shut: true}},
		{Client: "[2001:db8::1]:443", Protocol: "tls", Route: "tls sni=a.example", Target: "unix:/run/b.sock", Fallback: true,
			SNI: "a.example", Host: "h", ALPN: []string{"h2", "http/1.1"}, PipeFallbacks: 9,
			Up: DirState{Pipe: true}, Down: DirState{Pipe: true, Pending: MaxPipeBytes}},
		{Client: "192.0.2.8:1", Identifying: true, Trusted: true, Age: time.Second, Up: DirState{Pipe: true, Pending: MaxIdentify}},
		{Client: "192.0.2.9:1", Identifying: true},
		{Client: "192.0.2.10:1", Identifying: true, ProxyHeader: true, Up: DirState{Pipe: true, Pending: 11}},
		{Client: "192.0.2.11:1", Protocol: "ssh", Route: "ssh", Target: "127.0.0.1:22", Replay: true, HeaderLeft: MaxProxyHeader,
			Up: DirState{Pipe: true, Pending: MaxReplay}},
		{Client: "192.0.2.12:1", Protocol: "ssh", Route: "ssh", Target: "b:22", Trusted: true, Replay: true, Up: DirState{N: 9, Pipe: true, Pending: 3}},
		{Client: strings.Repeat("c", MaxName), Protocol: strings.Repeat("p", MaxName), Route: strings.Repeat("r", MaxName),
			Target: strings.Repeat("t", MaxName), SNI: strings.Repeat("s", MaxName), Host: strings.Repeat("h", MaxName), ALPN: alpn},
	}
}

// TestConnRoundTrip: every valid state decodes to itself, and its
// encoding is the only one.
func TestConnRoundTrip(t *testing.T) {
	for i, c := range connStates() {
		b, err := EncodeConn(nil, c)
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if len(b) > MaxMeta {
			t.Fatalf("%d: %d bytes, over a record's metadata bound", i, len(b))
		}
		got, err := DecodeConn(b)
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Errorf("%d: decoded %+v", i, got)
		}
		again, _ := EncodeConn(nil, got)
		if !bytes.Equal(again, b) {
			t.Errorf("%d: encodes two ways", i)
		}
	}
}

// TestConnBounds: a sender cannot write a state the receiver refuses, and
// a state of another version is refused as such.
func TestConnBounds(t *testing.T) {
	bad := []ConnState{
		{Client: strings.Repeat("c", MaxName+1)},
		{ALPN: make([]string, MaxALPN+1)},
		{ALPN: []string{strings.Repeat("a", MaxALPNName+1)}},
		{Age: -1},
		{Idle: time.Duration(maxDurationNS) + 1},
		{PipeFallbacks: -1},
		{Up: DirState{N: -1}},
		{Down: DirState{Pending: 1}}, // bytes without a pipe
		{Down: DirState{Pipe: true, Pending: MaxPipeBytes + 1}},
		{Identifying: true, Up: DirState{Pipe: true, Pending: MaxIdentify + 1}},
		{Identifying: true, Up: DirState{Pipe: true}}, // a pipe with nothing in it
		{Identifying: true, Down: DirState{N: 1}},     // bytes back before a backend
		{ProxyHeader: true}, // a header being read, but a backend
		{Identifying: true, ProxyHeader: true, Trusted: true}, // a client from a header not yet read
		{Replay: true}, // a replay with nothing left to send
		{Replay: true, Up: DirState{Pipe: true, Pending: MaxReplay + 1}},           // over a first flight and a header
		{Replay: true, Identifying: true, Up: DirState{Pipe: true, Pending: 1}},    // a replay without a backend
		{Replay: true, Up: DirState{Pipe: true, Pending: 1}, Down: DirState{N: 1}}, // bytes back mid-replay
		{Replay: true, Up: DirState{Pipe: true, Pending: 1, EOF: true}},
		{Replay: true, HeaderLeft: 2, Up: DirState{Pipe: true, Pending: 1}}, // more header than bytes
		{Replay: true, HeaderLeft: MaxProxyHeader + 1, Up: DirState{Pipe: true, Pending: MaxReplay}},
		{HeaderLeft: 1, Up: DirState{Pipe: true, Pending: 1}}, // a header left outside a replay
		{Replay: true, HeaderLeft: -1, Up: DirState{Pipe: true, Pending: 1}},
	}
	for i, c := range bad {
		if _, err := EncodeConn(nil, c); err == nil {
			t.Errorf("%d: %+v encoded", i, c)
		}
	}
	b, _ := EncodeConn(nil, ConnState{})
	b[0] = ConnVersion + 1
	if _, err := DecodeConn(b); !errors.Is(err, ErrVersion) {
		t.Errorf("another version: %v", err)
	}
	long := append([]byte{ConnVersion, 0}, 0x80, 0x00) // a zero written in two bytes
	if _, err := DecodeConn(long); err == nil {
		t.Error("a number encoded long was taken")
	}
}

// TestConnGroups: connections with and without pipes, packed into one
// message, come out of a decoded message as they went in; a group out of
// its layout is refused whole.
func TestConnGroups(t *testing.T) {
	m := Message{Kind: Conns}
	states := connStates()
	for i, c := range states {
		if err := AppendConn(&m, c, TCPConn, UnixConn); err != nil {
			t.Fatalf("%d: %v", i, err)
		}
	}
	b, err := Encode(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	dm, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	gs, err := DecodeConns(dm)
	if err != nil {
		t.Fatal(err)
	}
	first := 0
	for i, g := range gs {
		backend := UnixConn
		if states[i].Identifying {
			backend = 0
		}
		if !reflect.DeepEqual(g.State, states[i]) || g.First != first || g.Client != TCPConn || g.Backend != backend {
			t.Errorf("%d: %+v", i, g)
		}
		first += states[i].FDs()
	}
	if len(gs) != len(states) || first != len(m.Records) {
		t.Fatalf("%d groups over %d records", len(gs), first)
	}
	cut := m
	cut.Records = m.Records[:len(m.Records)-1] // the last pipe's write end missing
	if _, err := DecodeConns(cut); err == nil {
		t.Error("a group without its last pipe was taken")
	}
	swapped := Message{Kind: Conns, Records: []Record{m.Records[1], m.Records[0]}}
	if _, err := DecodeConns(swapped); err == nil {
		t.Error("a backend first was taken")
	}
	if err := AppendConn(&m, ConnState{}, Pipe, TCPConn); err == nil {
		t.Error("a pipe as a client was taken")
	}
	full := Message{Kind: Conns}
	for AppendConn(&full, ConnState{}, TCPConn, TCPConn) == nil {
	}
	if len(full.Records) > MaxFDsPerMessage {
		t.Errorf("%d descriptors in one message", len(full.Records))
	}
}

// FuzzDecodeConn: no input panics or decodes to a state over its bounds;
// whatever decodes encodes back to the same bytes.
func FuzzDecodeConn(f *testing.F) {
	for _, c := range connStates() {
		b, _ := EncodeConn(nil, c)
		f.Add(b)
	}
	for _, c := range connStatesV1() {
		b, _ := EncodeConnVersion(nil, connVersion1, c)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeConn(b)
		if err != nil {
			return
		}
		again, err := EncodeConnVersion(nil, b[0], c)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("decoded %+v, which encodes to %x (%v), not %x", c, again, err, b)
		}
	})
}

// FuzzDecodeConns: no message panics DecodeConns, and every group it
// returns lies inside the message's records, back to back.
func FuzzDecodeConns(f *testing.F) {
	m := Message{Kind: Conns}
	for _, c := range connStates()[:9] {
		_ = AppendConn(&m, c, TCPConn, TCPConn)
	}
	b, _ := Encode(nil, m)
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		gs, err := DecodeConns(m)
		if err != nil {
			return
		}
		next := 0
		for _, g := range gs {
			if g.First != next || g.First+g.State.FDs() > len(m.Records) {
				t.Fatalf("group at %d of %d descriptors, in %d records", g.First, g.State.FDs(), len(m.Records))
			}
			next += g.State.FDs()
		}
		if next != len(m.Records) {
			t.Fatalf("groups cover %d of %d records", next, len(m.Records))
		}
	})
}

// TestConnHostileStates: bytes no sender of this version writes — a
// state of version 1 (before a replay or a PROXY header being read could
// move), unknown flags, flags that contradict the fields, a PROXY
// header's length over its bound — are refused, never taken as a state.
func TestConnHostileStates(t *testing.T) {
	replay := connStates()[6]
	good, err := EncodeConn(nil, replay)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeConn(good); err != nil {
		t.Fatal(err)
	}
	v1 := append([]byte{1}, good[1:]...)
	if _, err := DecodeConn(v1); !errors.Is(err, ErrFormat) {
		t.Errorf("a version 1 state with a replay's flag: %v", err)
	}
	for _, v := range []byte{0, 3, 0xff} {
		if _, err := DecodeConn(append([]byte{v}, good[1:]...)); !errors.Is(err, ErrVersion) {
			t.Errorf("a version %d state: %v", v, err)
		}
	}
	flags := func(f byte) []byte { b := bytes.Clone(good); b[1] = f; return b }
	for _, f := range []byte{0x20, 0x80, 0xff, 0x08 | 0x10, 0x02 | 0x10, 0x08} {
		if c, err := DecodeConn(flags(f)); err == nil {
			t.Errorf("flags %#x taken: %+v", f, c)
		}
	}
	// HeaderLeft is the last number before the directions (Up: N,
	// Pending, flags; Down: three zeros): write it one over its bound.
	uv := func(v uint64) []byte { return binary.AppendUvarint(nil, v) }
	dirs := len(uv(uint64(replay.Up.N))) + len(uv(uint64(replay.Up.Pending))) + 1 + 3
	at := len(good) - dirs - len(uv(MaxProxyHeader))
	if !bytes.Equal(good[at:len(good)-dirs], uv(MaxProxyHeader)) {
		t.Fatal("HeaderLeft is not where the test looks for it")
	}
	hostile := append(append(bytes.Clone(good[:at]), uv(MaxProxyHeader+1)...), good[len(good)-dirs:]...)
	if c, err := DecodeConn(hostile); !errors.Is(err, ErrBounds) {
		t.Errorf("a PROXY header of %d bytes left: %+v, %v", MaxProxyHeader+1, c, err)
	}
}

// connStatesV1 are the valid states the first release wrote (ConnVersion
// 1): no PROXY header being read, no replay.
func connStatesV1() []ConnState {
	var out []ConnState
	for _, c := range connStates() {
		if !c.ProxyHeader && !c.Replay {
			out = append(out, c)
		}
	}
	return out
}

// TestConnVersion1: a state as the first release wrote it decodes into
// today's, unchanged; one version 1 cannot hold is not written.
func TestConnVersion1(t *testing.T) {
	for _, c := range connStatesV1() {
		b, err := EncodeConnVersion(nil, connVersion1, c)
		if err != nil {
			t.Fatal(err)
		}
		if b[0] != 1 || b[1] > 7 {
			t.Fatalf("version %d, flags %#x", b[0], b[1])
		}
		now, _ := EncodeConn(nil, c)
		if len(b) != len(now)-1 { // no HeaderLeft (a zero: one byte)
			t.Errorf("%d bytes in version 1, %d in version %d", len(b), len(now), ConnVersion)
		}
		got, err := DecodeConn(b)
		if err != nil || !reflect.DeepEqual(got, c) {
			t.Errorf("decoded %+v, %v; want %+v", got, err, c)
		}
	}
	for _, c := range connStates() {
		if c.ProxyHeader || c.Replay {
			if _, err := EncodeConnVersion(nil, connVersion1, c); !errors.Is(err, ErrFormat) {
				t.Errorf("%+v written in version 1: %v", c, err)
			}
		}
	}
	if _, err := EncodeConnVersion(nil, 3, ConnState{}); !errors.Is(err, ErrVersion) {
		t.Errorf("version 3 written: %v", err)
	}
}
