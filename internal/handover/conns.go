package handover

import (
	"encoding/binary"
	"fmt"
	"time"
)

// An established connection moves as a group of records in a Conns
// message: the client's socket, whose metadata is the connection's state
// (ConnState, in its own versioned encoding), the backend's socket, then
// each splice pipe that holds bytes, read end then write end (up, then
// down). The bytes the old process had read but not written travel in
// those pipes, never in the metadata: the kernel keeps them, so a
// connection's state stays small whatever it holds.
//
// A connection still being identified (Identifying), or whose trusted
// sender's PROXY header is still being read (ProxyHeader), has no backend:
// its group is the client's socket, then, when it has sent any, a pipe
// with the bytes read so far (Up).
//
// A connection mid-replay (Replay) has its backend: the group of a
// forwarded pair, whose Up pipe holds exactly the bytes the backend has
// not taken yet, the rest of the PROXY header (HeaderLeft bytes) then the
// rest of the first flight. The new process writes those and forwards;
// it never builds the header again.

// ConnVersion is the encoding of a ConnState this package writes. It
// reads it and connVersion1, the first release's (in format 1's Conns
// messages): the subset without ProxyHeader, Replay and HeaderLeft. A new
// process that reads another refuses the message, and the old one keeps
// the connections.
const ConnVersion = 2

// connVersion1 is the first release's ConnState: flags Fallback,
// Identifying and Trusted, and no HeaderLeft.
const connVersion1 = 1

// Bounds of a ConnState.
const (
	MaxALPN      = 8       // protocols listed for the access log
	MaxALPNName  = 255     // RFC 7301: a protocol name is 1-255 bytes
	MaxPipeBytes = 1 << 24 // bytes a pipe can hold: F_SETPIPE_SZ's default maximum is 1 MiB; this leaves room
	MaxIdentify  = 1 << 20 // bytes read by a connection still being identified: server.buffer_size's bound
	// MaxProxyHeader is the longest PROXY header: v2's 16 bytes and its
	// 16-bit length (a v1 line is at most 107 bytes).
	MaxProxyHeader = 16 + 0xffff
	// MaxReplay bounds a replay still to send: a first flight and a
	// PROXY header.
	MaxReplay     = MaxIdentify + MaxProxyHeader
	maxDurationNS = int64(100 * 365 * 24 * time.Hour)
)

// Record names of a connection's group.
const (
	nameClient  = "client"
	nameBackend = "backend"
)

var pipeNames = [2][2]string{{"up.r", "up.w"}, {"down.r", "down.w"}}

// ConnState is one forwarded connection as it moves: what the new process
// needs to go on copying it, to account for it and to write its access
// line when it ends.
type ConnState struct {
	Client   string // the client's address (a trusted PROXY header's); "" for a Unix socket's client
	Protocol string
	Route    string // the route's label
	Target   string // the target as configured
	Fallback bool
	// Identifying: it has no route yet; Up's pipe holds the bytes read so
	// far, which the new process identifies again (and the rest of the
	// fields but Client, Trusted, ProxyHeader and Age are zero).
	Identifying bool
	// Trusted: Client is what a trusted sender's PROXY header named.
	Trusted bool
	// ProxyHeader: an Identifying connection whose trusted sender's PROXY
	// header is still being read; Up's pipe holds its bytes so far, and
	// Client is the sender's own address.
	ProxyHeader bool
	// Replay: a pair whose backend has not taken the whole replay yet;
	// Up's pipe holds what is left of it (and Up.N counts the first
	// flight's bytes sent), Down is zero.
	Replay bool
	// HeaderLeft is how many bytes at the front of a Replay's pipe are
	// the rest of the PROXY header, which Up.N never counts.
	HeaderLeft    int
	SNI, Host     string
	ALPN          []string
	Age           time.Duration // since it was accepted
	IdleFor       time.Duration // since a byte last moved
	Idle          time.Duration // its idle timeout; 0: none
	PipeFallbacks int64
	Up, Down      DirState // client → backend, backend → client
}

// DirState is one direction of a moving connection.
type DirState struct {
	N       int64 // bytes written to the destination so far
	Pipe    bool  // a pipe follows (read end, write end)
	Pending int   // bytes in that pipe, not yet written
	RDHUP   bool  // the source's FIN is queued behind its data
	EOF     bool  // the source reached EOF
	Shut    bool  // the destination was shut down for writing
}

// FDs is how many descriptors the connection's group holds.
func (c *ConnState) FDs() int {
	n := 2
	if c.Identifying {
		n = 1
	}
	for _, d := range [2]*DirState{&c.Up, &c.Down} {
		if d.Pipe {
			n += 2
		}
	}
	return n
}

// AppendConn adds c's group to m: client and backend are the types of
// its sockets. The caller attaches the descriptors in the same order:
// client, backend, then the pipes.
func AppendConn(m *Message, c ConnState, client, backend FDType) error {
	if !isConnType(client) || !isConnType(backend) {
		return fmt.Errorf("%w: a connection of a %s and a %s", ErrFormat, client, backend)
	}
	meta, err := EncodeConn(nil, c)
	if err != nil {
		return err
	}
	if len(m.Records)+c.FDs() > MaxFDsPerMessage {
		return fmt.Errorf("%w: %d descriptors, at most %d per message", ErrBounds, len(m.Records)+c.FDs(), MaxFDsPerMessage)
	}
	m.Records = append(m.Records, Record{Type: client, Name: nameClient, Meta: meta})
	if !c.Identifying {
		m.Records = append(m.Records, Record{Type: backend, Name: nameBackend})
	}
	for i, d := range [2]*DirState{&c.Up, &c.Down} {
		if d.Pipe {
			m.Records = append(m.Records, Record{Type: Pipe, Name: pipeNames[i][0]}, Record{Type: Pipe, Name: pipeNames[i][1]})
		}
	}
	return nil
}

// ConnGroup is one connection of a Conns message.
type ConnGroup struct {
	State           ConnState
	First           int    // index of its client record (and descriptor)
	Client, Backend FDType // its sockets' types; Backend is 0 for an identifying connection
}

// DecodeConns reads the groups of a Conns message; it fails whole on any
// record that is not where the layout puts it.
func DecodeConns(m Message) ([]ConnGroup, error) {
	if m.Kind != Conns {
		return nil, fmt.Errorf("%w: a %s message, not conns", ErrFormat, m.Kind)
	}
	var out []ConnGroup
	rs := m.Records
	for i := 0; i < len(rs); {
		cl := rs[i]
		if cl.Name != nameClient || !isConnType(cl.Type) {
			return nil, fmt.Errorf("%w: record %d: want a client socket", ErrFormat, i)
		}
		st, err := DecodeConn(cl.Meta)
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", i, err)
		}
		g := ConnGroup{State: st, First: i, Client: cl.Type}
		j := i + 1
		if !st.Identifying {
			if j >= len(rs) {
				return nil, fmt.Errorf("%w: record %d: a connection without its backend", ErrFormat, i)
			}
			if be := rs[j]; be.Name != nameBackend || !isConnType(be.Type) || len(be.Meta) > 0 {
				return nil, fmt.Errorf("%w: record %d: want a backend socket", ErrFormat, j)
			}
			g.Backend = rs[j].Type
			j++
		}
		for k, d := range [2]*DirState{&st.Up, &st.Down} {
			if !d.Pipe {
				continue
			}
			if j+2 > len(rs) {
				return nil, fmt.Errorf("%w: record %d: a pipe missing", ErrFormat, j)
			}
			for e := range 2 {
				if r := rs[j+e]; r.Type != Pipe || r.Name != pipeNames[k][e] || len(r.Meta) > 0 {
					return nil, fmt.Errorf("%w: record %d: want the pipe %s", ErrFormat, j+e, pipeNames[k][e])
				}
			}
			j += 2
		}
		out = append(out, g)
		i = j
	}
	return out, nil
}

func isConnType(t FDType) bool { return t == TCPConn || t == UnixConn }

// EncodeConn appends c's encoding to b: the version, then each field.
func EncodeConn(b []byte, c ConnState) ([]byte, error) { return EncodeConnVersion(b, ConnVersion, c) }

// EncodeConnVersion appends c's encoding in version v (ConnVersion, or
// the first release's, 1: what a format-1 peer writes, which tests play)
// to b. A state version 1 cannot hold (a PROXY header being read, a
// replay) is refused.
func EncodeConnVersion(b []byte, v byte, c ConnState) ([]byte, error) {
	if err := c.check(); err != nil {
		return b, err
	}
	switch {
	case v == connVersion1 && (c.ProxyHeader || c.Replay):
		return b, fmt.Errorf("%w: connection state version 1 holds no replay or PROXY header being read", ErrFormat)
	case v != connVersion1 && v != ConnVersion:
		return b, fmt.Errorf("%w: connection state version %d", ErrVersion, v)
	}
	b = append(b, v, boolBits(c.Fallback, c.Identifying, c.Trusted, c.ProxyHeader, c.Replay))
	for _, s := range [...]string{c.Client, c.Protocol, c.Route, c.Target, c.SNI, c.Host} {
		b = appendString(b, s)
	}
	b = binary.AppendUvarint(b, uint64(len(c.ALPN)))
	for _, s := range c.ALPN {
		b = appendString(b, s)
	}
	for _, n := range [...]int64{int64(c.Age), int64(c.IdleFor), int64(c.Idle), c.PipeFallbacks} {
		b = binary.AppendUvarint(b, uint64(n))
	}
	if v != connVersion1 {
		b = binary.AppendUvarint(b, uint64(c.HeaderLeft))
	}
	for _, d := range [2]DirState{c.Up, c.Down} {
		b = binary.AppendUvarint(b, uint64(d.N))
		b = binary.AppendUvarint(b, uint64(d.Pending))
		b = append(b, boolBits(d.Pipe, d.RDHUP, d.EOF, d.Shut))
	}
	return b, nil
}

// check is every bound DecodeConn applies, for the sender.
func (c *ConnState) check() error {
	for _, s := range [...]string{c.Client, c.Protocol, c.Route, c.Target, c.SNI, c.Host} {
		if len(s) > MaxName {
			return fmt.Errorf("%w: a connection's field of %d bytes, at most %d", ErrBounds, len(s), MaxName)
		}
	}
	if len(c.ALPN) > MaxALPN {
		return fmt.Errorf("%w: %d ALPN protocols, at most %d", ErrBounds, len(c.ALPN), MaxALPN)
	}
	if c.Identifying && (c.Up.Pending > MaxIdentify || c.Up.Pipe != (c.Up.Pending > 0) || c.Down != (DirState{})) {
		return fmt.Errorf("%w: an identifying connection with %d bytes read, a pipe %v, bytes back %v", ErrFormat, c.Up.Pending, c.Up.Pipe, c.Down != (DirState{}))
	}
	if c.ProxyHeader && (!c.Identifying || c.Trusted) {
		return fmt.Errorf("%w: a PROXY header being read, identifying %v, its client already from a header %v", ErrFormat, c.Identifying, c.Trusted)
	}
	if c.Replay && (c.Identifying || !c.Up.Pipe || c.Up.Pending == 0 || c.Up.Pending > MaxReplay || c.Up.RDHUP || c.Up.EOF || c.Up.Shut || c.Down != (DirState{})) {
		return fmt.Errorf("%w: a replay of %d bytes (at most %d), identifying %v, with flags or bytes back", ErrFormat, c.Up.Pending, MaxReplay, c.Identifying)
	}
	if c.HeaderLeft < 0 || c.HeaderLeft > MaxProxyHeader || (c.HeaderLeft > 0 && (!c.Replay || c.HeaderLeft > c.Up.Pending)) {
		return fmt.Errorf("%w: %d bytes of a PROXY header left (at most %d), in a replay of %d", ErrBounds, c.HeaderLeft, MaxProxyHeader, c.Up.Pending)
	}
	for _, s := range c.ALPN {
		if len(s) > MaxALPNName {
			return fmt.Errorf("%w: an ALPN protocol of %d bytes", ErrBounds, len(s))
		}
	}
	for _, v := range [...]int64{int64(c.Age), int64(c.IdleFor), int64(c.Idle)} {
		if v < 0 || v > maxDurationNS {
			return fmt.Errorf("%w: a duration of %v", ErrBounds, time.Duration(v))
		}
	}
	if c.PipeFallbacks < 0 {
		return fmt.Errorf("%w: %d pipe fallbacks", ErrFormat, c.PipeFallbacks)
	}
	for _, d := range [2]DirState{c.Up, c.Down} {
		switch {
		case d.N < 0:
			return fmt.Errorf("%w: %d bytes moved", ErrFormat, d.N)
		case d.Pending < 0 || d.Pending > MaxPipeBytes:
			return fmt.Errorf("%w: %d bytes pending, at most %d", ErrBounds, d.Pending, MaxPipeBytes)
		case d.Pending > 0 && !d.Pipe:
			return fmt.Errorf("%w: %d bytes pending without a pipe", ErrFormat, d.Pending)
		}
	}
	return nil
}

// stateHeader checks the version, size and flags byte that start a
// moving connection's or flow's state (what names it in errors), and
// returns the flags and a reader of the rest.
func stateHeader(b []byte, what string, version, maxFlags byte) (byte, *reader, error) {
	switch {
	case len(b) < 2:
		return 0, nil, fmt.Errorf("%w: a %s's state of %d bytes", ErrFormat, what, len(b))
	case b[0] != version:
		return 0, nil, fmt.Errorf("%w: %s state version %d, this process reads %d", ErrVersion, what, b[0], version)
	case len(b) > MaxMeta:
		return 0, nil, fmt.Errorf("%w: a %s's state of %d bytes", ErrBounds, what, len(b))
	case b[1] > maxFlags:
		return 0, nil, fmt.Errorf("%w: %s flags %#x", ErrFormat, what, b[1])
	}
	return b[1], &reader{b: b[2:]}, nil
}

// DecodeConn reads a ConnState of ConnVersion or connVersion1; another
// version fails with ErrVersion before anything else is read.
func DecodeConn(b []byte) (ConnState, error) {
	var c ConnState
	version, maxFlags := byte(ConnVersion), byte(0x1f)
	if len(b) > 0 && b[0] == connVersion1 {
		version, maxFlags = connVersion1, 0x7
	}
	flags, r, err := stateHeader(b, "connection", version, maxFlags)
	if err != nil {
		return c, err
	}
	c.Fallback, c.Identifying, c.Trusted, c.ProxyHeader, c.Replay = flags&1 != 0, flags&2 != 0, flags&4 != 0, flags&8 != 0, flags&16 != 0
	for _, s := range [...]*string{&c.Client, &c.Protocol, &c.Route, &c.Target, &c.SNI, &c.Host} {
		*s = r.string(MaxName)
	}
	if n := r.uint(MaxALPN); n > 0 {
		c.ALPN = make([]string, n)
		for i := range c.ALPN {
			c.ALPN[i] = r.string(MaxALPNName)
		}
	}
	for _, v := range [...]*time.Duration{&c.Age, &c.IdleFor, &c.Idle} {
		*v = time.Duration(r.uint(uint64(maxDurationNS)))
	}
	c.PipeFallbacks = int64(r.uint(1<<63 - 1))
	if version != connVersion1 {
		c.HeaderLeft = int(r.uint(MaxProxyHeader))
	}
	for _, d := range [2]*DirState{&c.Up, &c.Down} {
		d.N = int64(r.uint(1<<63 - 1))
		d.Pending = int(r.uint(MaxPipeBytes))
		f := r.byte()
		if f > 0xf {
			r.err = fmt.Errorf("%w: direction flags %#x", ErrFormat, f)
		}
		d.Pipe, d.RDHUP, d.EOF, d.Shut = f&1 != 0, f&2 != 0, f&4 != 0, f&8 != 0
	}
	if r.err == nil && len(r.b) > 0 {
		r.err = fmt.Errorf("%w: %d bytes after a connection's state", ErrFormat, len(r.b))
	}
	if r.err != nil {
		return ConnState{}, r.err
	}
	if err := c.check(); err != nil {
		return ConnState{}, err
	}
	return c, nil
}

// reader reads a ConnState's fields; the first error stops it.
type reader struct {
	b   []byte
	err error
}

func (r *reader) uint(max uint64) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = fmt.Errorf("%w: a number cut short", ErrFormat)
		return 0
	}
	if v > max {
		r.err = fmt.Errorf("%w: %d, at most %d", ErrBounds, v, max)
		return 0
	}
	// One encoding per value: Encode then Decode gives the same bytes.
	if n != len(binary.AppendUvarint(nil, v)) {
		r.err = fmt.Errorf("%w: a number encoded long", ErrFormat)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) string(max int) string {
	n := int(r.uint(uint64(max)))
	if r.err != nil {
		return ""
	}
	if n > len(r.b) {
		r.err = fmt.Errorf("%w: a string cut short", ErrFormat)
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.err = fmt.Errorf("%w: a connection's state cut short", ErrFormat)
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// boolBits packs flags, the first in bit 0.
func boolBits(flags ...bool) byte {
	var v byte
	for i, f := range flags {
		if f {
			v |= 1 << i
		}
	}
	return v
}
