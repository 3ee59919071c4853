package handover

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// flowStates are valid states, the largest allowed included.
func flowStates() []FlowState {
	most := make([]int, MaxFlowDatagrams)
	most[0] = MaxFlowPending
	return []FlowState{
		{},
		{Listen: "127.0.0.1:1194", Socket: 1, Client: "192.0.2.7:40000", Protocol: "openvpn", Route: "openvpn", Target: "127.0.0.1:1195",
			Age: time.Hour, IdleFor: time.Second, Idle: 2 * time.Minute, DgUp: 9, DgDown: 8, BytesUp: 1 << 40, BytesDown: 3},
		{Listen: "[::]:53", Client: "[2001:db8::1]:5353", Protocol: "dns", Route: "dns", Target: "resolver.example:53",
			Responses: 1, Owed: 2, Heard: true, Awaiting: true, AwaitFor: time.Second, DgUp: 2},
		{Listen: "[::]:443", Socket: MaxFlowSockets - 1, Client: "192.0.2.8:1", Identifying: true, Pending: []int{1200, 1200}, Age: time.Second},
		{Client: "192.0.2.9:1", Identifying: true, Pending: most},
		{Listen: strings.Repeat("l", MaxName), Client: strings.Repeat("c", MaxName), Protocol: strings.Repeat("p", MaxName),
			Route: strings.Repeat("r", MaxName), Target: strings.Repeat("t", MaxName), Responses: 1 << 16, Owed: MaxFlowOwed},
	}
}

// TestFlowRoundTrip: every valid state decodes to itself, and its
// encoding is the only one.
func TestFlowRoundTrip(t *testing.T) {
	for i, f := range flowStates() {
		b, err := EncodeFlow(nil, f)
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if len(b) > MaxMeta {
			t.Fatalf("%d: %d bytes, over a record's metadata bound", i, len(b))
		}
		got, err := DecodeFlow(b)
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if !reflect.DeepEqual(got, f) {
			t.Errorf("%d: decoded %+v", i, got)
		}
		if again, _ := EncodeFlow(nil, got); !bytes.Equal(again, b) {
			t.Errorf("%d: encodes two ways", i)
		}
	}
}

// TestFlowBounds: a sender cannot write a state the receiver refuses; a
// state of another version, or over a bound on the wire, is refused.
func TestFlowBounds(t *testing.T) {
	bad := []FlowState{
		{Client: strings.Repeat("c", MaxName+1)},
		{Socket: -1},
		{Socket: MaxFlowSockets},
		{Identifying: true}, // nothing held
		{Pending: []int{1}}, // a routed flow holding a datagram
		{Identifying: true, Pending: make([]int, MaxFlowDatagrams+1)},
		{Identifying: true, Pending: []int{MaxFlowPending, 1}},
		{Identifying: true, Pending: []int{-1}},
		{Responses: -1},
		{Responses: 1<<16 + 1},
		{Owed: -1},
		{Owed: MaxFlowOwed + 1},
		{Age: -1},
		{Idle: time.Duration(maxDurationNS) + 1},
		{DgUp: -1},
		{BytesDown: -1},
	}
	for i, f := range bad {
		if _, err := EncodeFlow(nil, f); err == nil {
			t.Errorf("%d: %+v encoded", i, f)
		}
	}
	b, _ := EncodeFlow(nil, FlowState{})
	b[0] = FlowVersion + 1
	if _, err := DecodeFlow(b); !errors.Is(err, ErrVersion) {
		t.Errorf("another version: %v", err)
	}
	// A hostile sender's counts: 2^20 datagrams held, a socket number
	// past the bound; each is refused before it sizes anything.
	hostile := [][]byte{
		append([]byte{FlowVersion, 1, 0, 0, 0, 0, 0, 0}, 0x80, 0x80, 0x40),
		append([]byte{FlowVersion, 0, 0, 0, 0, 0, 0}, 0x40),
		append(append([]byte{FlowVersion, 0}, make([]byte, 5)...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
		{FlowVersion, 8},
		{FlowVersion},
		append(make([]byte, MaxMeta+1)[:0], append([]byte{FlowVersion, 0}, make([]byte, MaxMeta)...)...),
	}
	for i, b := range hostile {
		if f, err := DecodeFlow(b); err == nil {
			t.Errorf("hostile %d: decoded %+v", i, f)
		}
	}
}

// TestFlowRecords: flows packed into one message come out as they went
// in, each with the descriptor type its state calls for; a record of the
// wrong type or name is refused whole.
func TestFlowRecords(t *testing.T) {
	m := Message{Kind: Flows}
	states := flowStates()
	for i, f := range states {
		if err := AppendFlow(&m, f); err != nil {
			t.Fatalf("%d: %v", i, err)
		}
	}
	for i, r := range m.Records {
		if want := map[bool]FDType{false: UDPSocket, true: Pipe}[states[i].Identifying]; r.Type != want {
			t.Errorf("%d: a %s record", i, r.Type)
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
	got, err := DecodeFlows(dm)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, states) {
		t.Errorf("decoded %+v", got)
	}
	wrong := Message{Kind: Flows, Records: []Record{m.Records[0]}}
	wrong.Records[0].Type = Pipe
	if _, err := DecodeFlows(wrong); err == nil {
		t.Error("a routed flow with a pipe was taken")
	}
	named := Message{Kind: Flows, Records: []Record{{Type: UDPSocket, Name: "client", Meta: m.Records[0].Meta}}}
	if _, err := DecodeFlows(named); err == nil {
		t.Error("a record not named flow was taken")
	}
	if _, err := DecodeFlows(Message{Kind: Conns}); err == nil {
		t.Error("a conns message was read as flows")
	}
	full := Message{Kind: Flows}
	for AppendFlow(&full, FlowState{}) == nil {
	}
	if len(full.Records) != MaxFDsPerMessage {
		t.Errorf("%d descriptors in one message", len(full.Records))
	}
	// The largest states fill a message by its bytes first: each append
	// that fits encodes, the one that does not says ErrFull.
	big := Message{Kind: Flows}
	for err == nil {
		err = AppendFlow(&big, states[len(states)-1])
	}
	if !errors.Is(err, ErrFull) || !errors.Is(err, ErrBounds) {
		t.Errorf("a full message: %v", err)
	}
	if b, err := Encode(nil, big); err != nil || len(b) != encodedLen(&big) {
		t.Errorf("a message filled to its bound: %d bytes, %v; want %d", len(b), err, encodedLen(&big))
	}
}

// FuzzDecodeFlow: no input panics or decodes to a state over its bounds;
// whatever decodes encodes back to the same bytes.
func FuzzDecodeFlow(f *testing.F) {
	for _, s := range flowStates()[:4] {
		b, _ := EncodeFlow(nil, s)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeFlow(b)
		if err != nil {
			return
		}
		if s.PendingBytes() > MaxFlowPending || len(s.Pending) > MaxFlowDatagrams {
			t.Fatalf("decoded %+v, over its bounds", s)
		}
		again, err := EncodeFlow(nil, s)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("decoded %+v, which encodes to %x (%v), not %x", s, again, err, b)
		}
	})
}

// FuzzDecodeFlows: no message panics DecodeFlows, and every flow it
// returns is one record.
func FuzzDecodeFlows(f *testing.F) {
	m := Message{Kind: Flows}
	for _, s := range flowStates()[:4] {
		_ = AppendFlow(&m, s)
	}
	b, _ := Encode(nil, m)
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		fs, err := DecodeFlows(m)
		if err == nil && len(fs) != len(m.Records) {
			t.Fatalf("%d flows of %d records", len(fs), len(m.Records))
		}
	})
}
