package handover

import (
	"encoding/binary"
	"fmt"
	"time"
)

// A UDP flow moves as one record of a Flows message, whose metadata is
// the flow's state (FlowState, in its own versioned encoding):
//   - a routed flow: its connected upstream socket (UDPSocket), so the
//     backend goes on seeing the same source port;
//   - a flow still being identified, or whose host-name target was being
//     resolved (Identifying): the read end of a pipe holding the datagrams
//     it was given so far, back to back (Pending lists their lengths); the
//     new process identifies them again and dials (a dial is redone).
//
// The listening sockets are not in it: they moved with the listeners, all
// of an address's SO_REUSEPORT sockets in order, so a flow names the
// address (Listen) and its socket's place (Socket) and the kernel keeps
// sending the client's datagrams to the same socket.

// FlowVersion is the encoding of a FlowState this package writes and
// reads. A new process that reads another refuses the message, and the
// old one keeps the flows.
const FlowVersion = 1

// Bounds of a FlowState: those of internal/udp (an undecided flow holds
// at most 8 datagrams and 16 KiB; at most 64 sockets an address), which
// checks that its own stay within them.
const (
	MaxFlowDatagrams = 8
	MaxFlowPending   = 16 << 10
	MaxFlowSockets   = 64
	// MaxFlowOwed bounds the replies a flow awaits: udp_responses (at
	// most 1024) for each of at most 2^32 datagrams.
	MaxFlowOwed = 1 << 42
)

// nameFlow names a flow's record.
const nameFlow = "flow"

// FlowState is one UDP flow as it moves: what the new process needs to go
// on forwarding it, to account for it and to log it when it ends.
type FlowState struct {
	Listen string // its listener's address, as the listener reports it
	Socket int    // which of that address's sockets reads it (0: the first)
	Client string // the client's address:port
	// Identifying: no route yet (or a host-name dial was under way): the
	// pipe holds its datagrams, Pending their lengths, and the route's
	// fields are empty.
	Identifying bool
	Pending     []int
	Protocol    string
	Route       string // the route's label
	Target      string // the target as configured
	// Responses is the route's udp_responses (0: none), Owed the replies
	// the flow still awaits under it.
	Responses int
	Owed      int64
	// Heard: a reply came (the target was told it answers). Awaiting: it
	// waits for its first look at whether one came (passive health),
	// routed AwaitFor ago.
	Heard, Awaiting bool
	AwaitFor        time.Duration
	Age             time.Duration // since it began
	IdleFor         time.Duration // since its last datagram either way
	Idle            time.Duration // its idle timeout
	DgUp, DgDown    int64
	BytesUp         int64
	BytesDown       int64
}

// PendingBytes is what an identifying flow's pipe holds.
func (f *FlowState) PendingBytes() int {
	n := 0
	for _, l := range f.Pending {
		n += l
	}
	return n
}

// AppendFlow adds f's record to m (a Flows message). The caller attaches
// its descriptor in the same order: the upstream socket, or for an
// identifying flow the read end of the pipe with its datagrams.
func AppendFlow(m *Message, f FlowState) error {
	meta, err := EncodeFlow(nil, f)
	if err != nil {
		return err
	}
	if len(m.Records)+1 > MaxFDsPerMessage {
		return fmt.Errorf("%w: %d descriptors, at most %d per message", ErrFull, len(m.Records)+1, MaxFDsPerMessage)
	}
	if n := encodedLen(m) + recordLen + len(nameFlow) + len(meta); n > MaxMessage {
		return fmt.Errorf("%w: %d bytes, at most %d per message", ErrFull, n, MaxMessage)
	}
	t := UDPSocket
	if f.Identifying {
		t = Pipe
	}
	m.Records = append(m.Records, Record{Type: t, Name: nameFlow, Meta: meta})
	return nil
}

// ErrFull: a record does not fit the message; it goes in the next one.
var ErrFull = fmt.Errorf("%w: the message is full", ErrBounds)

// encodedLen is the size Encode gives m.
func encodedLen(m *Message) int {
	n := headerLen + len(m.Note)
	for _, r := range m.Records {
		n += recordLen + len(r.Name) + len(r.Meta)
	}
	return n
}

// DecodeFlows reads the flows of a Flows message, one per record; it
// fails whole on any record that is not a flow.
func DecodeFlows(m Message) ([]FlowState, error) {
	if m.Kind != Flows {
		return nil, fmt.Errorf("%w: a %s message, not flows", ErrFormat, m.Kind)
	}
	out := make([]FlowState, 0, len(m.Records))
	for i, r := range m.Records {
		if r.Name != nameFlow {
			return nil, fmt.Errorf("%w: record %d: want a flow", ErrFormat, i)
		}
		f, err := DecodeFlow(r.Meta)
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", i, err)
		}
		if want := map[bool]FDType{false: UDPSocket, true: Pipe}[f.Identifying]; r.Type != want {
			return nil, fmt.Errorf("%w: record %d: a flow with a %s, want a %s", ErrFormat, i, r.Type, want)
		}
		out = append(out, f)
	}
	return out, nil
}

// EncodeFlow appends f's encoding to b: the version, then each field.
func EncodeFlow(b []byte, f FlowState) ([]byte, error) {
	if err := f.check(); err != nil {
		return b, err
	}
	b = append(b, FlowVersion, boolBits(f.Identifying, f.Heard, f.Awaiting))
	for _, s := range [...]string{f.Listen, f.Client, f.Protocol, f.Route, f.Target} {
		b = appendString(b, s)
	}
	b = binary.AppendUvarint(b, uint64(f.Socket))
	b = binary.AppendUvarint(b, uint64(len(f.Pending)))
	for _, l := range f.Pending {
		b = binary.AppendUvarint(b, uint64(l))
	}
	b = binary.AppendUvarint(b, uint64(f.Responses))
	for _, v := range [...]int64{f.Owed, int64(f.AwaitFor), int64(f.Age), int64(f.IdleFor), int64(f.Idle), f.DgUp, f.DgDown, f.BytesUp, f.BytesDown} {
		b = binary.AppendUvarint(b, uint64(v))
	}
	return b, nil
}

// check is every bound DecodeFlow applies, for the sender.
func (f *FlowState) check() error {
	for _, s := range [...]string{f.Listen, f.Client, f.Protocol, f.Route, f.Target} {
		if len(s) > MaxName {
			return fmt.Errorf("%w: a flow's field of %d bytes, at most %d", ErrBounds, len(s), MaxName)
		}
	}
	switch {
	case f.Socket < 0 || f.Socket >= MaxFlowSockets:
		return fmt.Errorf("%w: socket %d of an address, at most %d", ErrBounds, f.Socket, MaxFlowSockets)
	case len(f.Pending) > MaxFlowDatagrams:
		return fmt.Errorf("%w: %d datagrams held, at most %d", ErrBounds, len(f.Pending), MaxFlowDatagrams)
	case f.Identifying && len(f.Pending) == 0:
		return fmt.Errorf("%w: an identifying flow without a datagram", ErrFormat)
	case !f.Identifying && len(f.Pending) > 0:
		return fmt.Errorf("%w: a routed flow holding datagrams", ErrFormat)
	case f.Responses < 0 || f.Responses > 1<<16:
		return fmt.Errorf("%w: udp_responses %d", ErrBounds, f.Responses)
	case f.Owed < 0 || f.Owed > MaxFlowOwed:
		return fmt.Errorf("%w: %d replies owed", ErrBounds, f.Owed)
	}
	n := 0
	for _, l := range f.Pending {
		if l < 0 || l > MaxFlowPending {
			return fmt.Errorf("%w: a datagram of %d bytes", ErrBounds, l)
		}
		n += l
	}
	if n > MaxFlowPending {
		return fmt.Errorf("%w: %d bytes held, at most %d", ErrBounds, n, MaxFlowPending)
	}
	for _, v := range [...]time.Duration{f.AwaitFor, f.Age, f.IdleFor, f.Idle} {
		if v < 0 || int64(v) > maxDurationNS {
			return fmt.Errorf("%w: a duration of %v", ErrBounds, v)
		}
	}
	for _, v := range [...]int64{f.DgUp, f.DgDown, f.BytesUp, f.BytesDown} {
		if v < 0 {
			return fmt.Errorf("%w: a count of %d", ErrFormat, v)
		}
	}
	return nil
}

// DecodeFlow reads a FlowState; another version fails with ErrVersion
// before anything else is read.
func DecodeFlow(b []byte) (FlowState, error) {
	var f FlowState
	flags, r, err := stateHeader(b, "flow", FlowVersion, 7)
	if err != nil {
		return f, err
	}
	f.Identifying, f.Heard, f.Awaiting = flags&1 != 0, flags&2 != 0, flags&4 != 0
	for _, s := range [...]*string{&f.Listen, &f.Client, &f.Protocol, &f.Route, &f.Target} {
		*s = r.string(MaxName)
	}
	f.Socket = int(r.uint(MaxFlowSockets - 1))
	if n := r.uint(MaxFlowDatagrams); n > 0 {
		f.Pending = make([]int, n)
		for i := range f.Pending {
			f.Pending[i] = int(r.uint(MaxFlowPending))
		}
	}
	f.Responses = int(r.uint(1 << 16))
	f.Owed = int64(r.uint(MaxFlowOwed))
	for _, v := range [...]*time.Duration{&f.AwaitFor, &f.Age, &f.IdleFor, &f.Idle} {
		*v = time.Duration(r.uint(uint64(maxDurationNS)))
	}
	for _, v := range [...]*int64{&f.DgUp, &f.DgDown, &f.BytesUp, &f.BytesDown} {
		*v = int64(r.uint(1<<63 - 1))
	}
	if r.err == nil && len(r.b) > 0 {
		r.err = fmt.Errorf("%w: %d bytes after a flow's state", ErrFormat, len(r.b))
	}
	if r.err != nil {
		return FlowState{}, r.err
	}
	if err := f.check(); err != nil {
		return FlowState{}, err
	}
	return f, nil
}
