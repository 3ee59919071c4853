// Package handover is the message format and the transport one protoplex
// process uses to give its sockets to the process that replaces it during
// an upgrade. The codec (Encode, Decode) is pure; the transport (Conn:
// sendmsg/recvmsg with SCM_RIGHTS over a SOCK_SEQPACKET socketpair) is
// kept at the edge, in conn_linux.go.
//
// A message is one seqpacket datagram: a versioned header, a short note,
// then one record per descriptor attached, in order. A record names the
// descriptor's type (checked against the descriptor received), a name (the
// listen address it serves) and opaque metadata.
//
// Bounds: a message holds at most MaxFDsPerMessage records and descriptors
// (the kernel's SCM_MAX_FD), at most MaxMessage bytes, a name of at most
// MaxName bytes, metadata of at most MaxMeta bytes and a note of at most
// MaxNote bytes. A Conn receives at most Limits.MaxTotalFDs descriptors in
// all, waits at most Limits.Timeout for a send or a receive, and closes
// every descriptor of a message it rejects.
package handover

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Version is the highest format this package writes and reads; it reads
// and writes every one from MinVersion. Version 2 added Adopted: the old
// process keeps a committed batch until the new one says it adopted it;
// and Flows. Version 1 is the first release's: a Conns batch is adopted
// on receipt and acknowledged, with no commit (conns.go). The new process
// frames its Hello as MinVersion, which every release reads, and names in
// its Count the highest it speaks; the old process picks the lower of
// that and its own (Negotiate), and every later message of either side is
// framed with it. A version outside MinVersion..Version is refused
// (ErrVersion), and the old process keeps serving.
const Version = 2

// MinVersion is the oldest format this package speaks: the first
// release's.
const MinVersion = 1

// CommitVersion is the first format whose batches are committed, then
// adopted (Adopted), and that has Flows; before it, the new process takes
// a Conns batch on receipt and acknowledges it.
const CommitVersion = 2

// Bounds of one message.
const (
	MaxFDsPerMessage = 253 // SCM_MAX_FD: the kernel attaches no more to one sendmsg
	MaxMessage       = 64 << 10
	MaxName          = 1024
	MaxMeta          = 16 << 10
	MaxNote          = 1024
)

// magic starts every message: a stray writer on the socket is not taken
// for a peer.
var magic = [4]byte{'P', 'P', 'X', 'H'}

const (
	headerLen = 16 // magic, version u16, kind u8, flags u8, records u16, note u16, count u32
	recordLen = 6  // type u8, flags u8, name u16, meta u16
)

// Kind is what a message is for.
type Kind uint8

const (
	// Hello is the new process's first message: it is up (Note: its
	// version string). It is framed as MinVersion; its Count names the
	// highest version it speaks (0: its frame's, as the first release
	// wrote it).
	Hello Kind = iota + 1
	// FDs carries descriptors, one per record.
	FDs
	// Done ends what the old process sends (Count: descriptors in all).
	Done
	// Ack is the new process's answer once it serves everything it was
	// given (Count: descriptors it took); the old one then stops.
	Ack
	// Refuse is either side's no (Note: why); the old process keeps
	// serving.
	Refuse
	// Conns carries established connections, after the listeners are
	// acknowledged: per connection a group of records, the first with the
	// connection's state as its metadata (conns.go). The new process
	// checks each whole and answers with an Ack (Count: connections it
	// can take), its connections on no loop yet, or a Refuse. The old one
	// then commits with an Ack of its own; or it gave up waiting and took
	// the batch back, and the new one closes what it was sent on the old
	// one's next message (a Done) or close. On the commit the new one puts
	// the batch on its loops, where nothing reads it yet, and answers
	// Adopted, or Refuse when it could not; it reads the batch only once
	// its Adopted is sent. The old process keeps its copies until the
	// Adopted, and takes the batch back on anything else (a Refuse, its
	// peer's close, an error, a timeout). The old process ends the phase
	// with a Done whose Count is the connections it keeps to drain.
	Conns
	// Flows carries UDP flows, after the connections: per flow one record
	// whose metadata is its state (flows.go). Each is answered like Conns;
	// a Flows message without records ends the phase (Count: the flows the
	// old process keeps to drain).
	Flows
	// Adopted is the new process's last word on a committed batch of
	// Conns or Flows (Count: how many it holds): from it on the batch is
	// the new process's, and the old one closes its copies.
	Adopted
	maxKind = Adopted
)

func (k Kind) String() string {
	switch k {
	case Hello:
		return "hello"
	case FDs:
		return "fds"
	case Done:
		return "done"
	case Ack:
		return "ack"
	case Refuse:
		return "refuse"
	case Conns:
		return "conns"
	case Flows:
		return "flows"
	case Adopted:
		return "adopted"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// FDType is what a descriptor is; the receiver checks it.
type FDType uint8

const (
	TCPListener  FDType = iota + 1 // a listening TCP socket
	UnixListener                   // a listening Unix stream socket
	UDPSocket                      // a UDP socket (a listener, or a flow's upstream)
	TCPConn                        // a connected (or connecting) TCP socket
	UnixConn                       // a connected Unix stream socket
	Pipe                           // either end of a pipe (a splice pipe with its bytes)
	maxFDType    = Pipe
)

func (t FDType) String() string {
	switch t {
	case TCPListener:
		return "tcp listener"
	case UnixListener:
		return "unix listener"
	case UDPSocket:
		return "udp socket"
	case TCPConn:
		return "tcp connection"
	case UnixConn:
		return "unix connection"
	case Pipe:
		return "pipe"
	}
	return fmt.Sprintf("fdtype(%d)", uint8(t))
}

// Record describes one descriptor of a message.
type Record struct {
	Type FDType
	Name string // the listen address it serves, or what the sender calls it
	Meta []byte // opaque to this package
}

// Message is one message of the handover.
type Message struct {
	Kind    Kind
	Count   uint32
	Note    string
	Records []Record // FDs only: one per descriptor, in order
}

// Errors of Decode and Encode. A message that fails is rejected whole.
var (
	ErrMagic   = errors.New("handover: not a handover message")
	ErrVersion = errors.New("handover: format version not supported")
	ErrFormat  = errors.New("handover: malformed message")
	ErrBounds  = errors.New("handover: message over its bounds")
)

// Negotiate is the version the old process speaks with the new one that
// sent hello, framed as frame: the lower of Version and the highest the
// hello names (its Count, or its frame's when that is higher). Nothing
// below MinVersion is spoken (ErrVersion).
func Negotiate(hello Message, frame uint16) (uint16, error) {
	if hello.Kind != Hello {
		return 0, fmt.Errorf("%w: a %s, not a hello", ErrFormat, hello.Kind)
	}
	peer := max(hello.Count, uint32(frame))
	v := min(peer, Version)
	if v < MinVersion || frame < MinVersion || frame > Version {
		return 0, fmt.Errorf("%w: a hello of version %d naming %d, this process speaks %d to %d", ErrVersion, frame, hello.Count, MinVersion, Version)
	}
	return uint16(v), nil
}

// Encode appends m, in this version's format, to b.
func Encode(b []byte, m Message) ([]byte, error) { return EncodeVersion(b, Version, m) }

// EncodeVersion appends m, in format v (MinVersion..Version), to b; a
// kind v does not have is refused.
func EncodeVersion(b []byte, v uint16, m Message) ([]byte, error) {
	if v < MinVersion || v > Version {
		return b, fmt.Errorf("%w: version %d, this process writes %d to %d", ErrVersion, v, MinVersion, Version)
	}
	if err := m.check(v); err != nil {
		return b, err
	}
	start := len(b)
	b = append(b, magic[:]...)
	b = binary.BigEndian.AppendUint16(b, v)
	b = append(b, byte(m.Kind), 0)
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Records)))
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Note)))
	b = binary.BigEndian.AppendUint32(b, m.Count)
	b = append(b, m.Note...)
	for _, r := range m.Records {
		b = append(b, byte(r.Type), 0)
		b = binary.BigEndian.AppendUint16(b, uint16(len(r.Name)))
		b = binary.BigEndian.AppendUint16(b, uint16(len(r.Meta)))
		b = append(b, r.Name...)
		b = append(b, r.Meta...)
	}
	if len(b)-start > MaxMessage {
		return b[:start], fmt.Errorf("%w: %d bytes, at most %d", ErrBounds, len(b)-start, MaxMessage)
	}
	return b, nil
}

// maxKindV1 is the last kind of format 1.
const maxKindV1 = Conns

// check is every bound and rule Decode applies to a message of format v,
// for the sender.
func (m *Message) check(v uint16) error {
	last := maxKind
	if v < CommitVersion {
		last = maxKindV1
	}
	switch {
	case m.Kind < Hello || m.Kind > last:
		return fmt.Errorf("%w: kind %d in version %d", ErrFormat, m.Kind, v)
	case len(m.Note) > MaxNote:
		return fmt.Errorf("%w: a note of %d bytes, at most %d", ErrBounds, len(m.Note), MaxNote)
	case len(m.Records) > MaxFDsPerMessage:
		return fmt.Errorf("%w: %d descriptors, at most %d per message", ErrBounds, len(m.Records), MaxFDsPerMessage)
	case len(m.Records) > 0 && m.Kind != FDs && m.Kind != Conns && m.Kind != Flows:
		return fmt.Errorf("%w: a %s message with descriptors", ErrFormat, m.Kind)
	}
	for i, r := range m.Records {
		switch {
		case r.Type < TCPListener || r.Type > maxFDType:
			return fmt.Errorf("%w: record %d: type %d", ErrFormat, i, r.Type)
		case len(r.Name) > MaxName:
			return fmt.Errorf("%w: record %d: a name of %d bytes, at most %d", ErrBounds, i, len(r.Name), MaxName)
		case len(r.Meta) > MaxMeta:
			return fmt.Errorf("%w: record %d: %d bytes of metadata, at most %d", ErrBounds, i, len(r.Meta), MaxMeta)
		}
	}
	return nil
}

// Decode reads one message of any version from MinVersion to Version
// (DecodeVersion says which).
func Decode(b []byte) (Message, error) {
	m, _, err := DecodeVersion(b)
	return m, err
}

// DecodeVersion reads one message and returns the version it is framed
// as. It allocates only for what b holds, checks every bound and takes
// nothing it does not understand: a message of a version outside
// MinVersion..Version fails with ErrVersion, before anything else is
// read, and one of a kind its version lacks with ErrFormat.
func DecodeVersion(b []byte) (Message, uint16, error) {
	m, err := decode(b)
	if err != nil {
		return Message{}, 0, err
	}
	v := binary.BigEndian.Uint16(b[4:])
	if err := m.check(v); err != nil {
		return Message{}, 0, err
	}
	return m, v, nil
}

func decode(b []byte) (Message, error) {
	var m Message
	if len(b) < len(magic)+2 || [4]byte(b[:4]) != magic {
		return m, ErrMagic
	}
	if v := binary.BigEndian.Uint16(b[4:]); v < MinVersion || v > Version {
		return m, fmt.Errorf("%w: version %d, this process reads %d to %d", ErrVersion, v, MinVersion, Version)
	}
	if len(b) > MaxMessage {
		return m, fmt.Errorf("%w: %d bytes, at most %d", ErrBounds, len(b), MaxMessage)
	}
	if len(b) < headerLen {
		return m, fmt.Errorf("%w: a header of %d bytes", ErrFormat, len(b))
	}
	if b[7] != 0 {
		return m, fmt.Errorf("%w: flags %#x", ErrFormat, b[7])
	}
	m.Kind = Kind(b[6])
	nrec := int(binary.BigEndian.Uint16(b[8:]))
	nnote := int(binary.BigEndian.Uint16(b[10:]))
	m.Count = binary.BigEndian.Uint32(b[12:])
	if nrec > MaxFDsPerMessage {
		return m, fmt.Errorf("%w: %d descriptors, at most %d per message", ErrBounds, nrec, MaxFDsPerMessage)
	}
	if nnote > MaxNote {
		return m, fmt.Errorf("%w: a note of %d bytes, at most %d", ErrBounds, nnote, MaxNote)
	}
	// Every record takes recordLen bytes at least: a count the message
	// cannot hold is refused before it sizes anything.
	rest := b[headerLen:]
	if nnote+nrec*recordLen > len(rest) {
		return m, fmt.Errorf("%w: %d records and a note of %d bytes in %d bytes", ErrFormat, nrec, nnote, len(rest))
	}
	m.Note, rest = string(rest[:nnote]), rest[nnote:]
	if nrec > 0 {
		m.Records = make([]Record, nrec)
	}
	for i := range m.Records {
		if len(rest) < recordLen {
			return Message{}, fmt.Errorf("%w: record %d cut short", ErrFormat, i)
		}
		r := &m.Records[i]
		r.Type = FDType(rest[0])
		if rest[1] != 0 {
			return Message{}, fmt.Errorf("%w: record %d: flags %#x", ErrFormat, i, rest[1])
		}
		nname, nmeta := int(binary.BigEndian.Uint16(rest[2:])), int(binary.BigEndian.Uint16(rest[4:]))
		rest = rest[recordLen:]
		if nname > MaxName || nmeta > MaxMeta {
			return Message{}, fmt.Errorf("%w: record %d: a name of %d bytes and %d of metadata", ErrBounds, i, nname, nmeta)
		}
		if nname+nmeta > len(rest) {
			return Message{}, fmt.Errorf("%w: record %d cut short", ErrFormat, i)
		}
		r.Name = string(rest[:nname])
		if nmeta > 0 {
			r.Meta = append([]byte(nil), rest[nname:nname+nmeta]...)
		}
		rest = rest[nname+nmeta:]
	}
	if len(rest) > 0 {
		return Message{}, fmt.Errorf("%w: %d bytes after the last record", ErrFormat, len(rest))
	}
	return m, nil
}
