package handover

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Supported reports whether this system can hand sockets over.
const Supported = true

// Limits bound what a Conn receives and how long it waits.
type Limits struct {
	// MaxTotalFDs is how many descriptors the Conn takes in all (0:
	// DefaultMaxTotalFDs); a message that would cross it is refused whole.
	MaxTotalFDs int
	// Timeout bounds each send and each receive (0: DefaultTimeout): a
	// peer that stops reading or stops sending cannot hold the other.
	Timeout time.Duration
}

// Defaults of Limits.
const (
	DefaultMaxTotalFDs = 1 << 16
	DefaultTimeout     = 10 * time.Second
)

// Conn is one end of a handover socket: a SOCK_SEQPACKET Unix socket, so
// each message arrives whole with its descriptors, or not at all.
type Conn struct {
	uc    *net.UnixConn
	lim   Limits
	taken int // descriptors received so far
	// version is the format agreed on (Negotiate): 0 until the old
	// process reads the new one's hello, or the new one the old one's
	// first message, which is framed with it.
	version uint16
	out     []byte
	in      []byte
	oob     []byte
}

// Pair returns the two connected ends of a new handover socket: the old
// process keeps one and gives the other to the process it starts.
func Pair(lim Limits) (*Conn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	peer := os.NewFile(uintptr(fds[1]), "handover")
	c, err := FileConn(os.NewFile(uintptr(fds[0]), "handover"), lim)
	if err != nil {
		peer.Close()
		return nil, nil, err
	}
	return c, peer, nil
}

// FileConn makes a Conn of f, a SOCK_SEQPACKET Unix socket (as the new
// process finds the end it inherited). f is closed: the Conn holds a
// duplicate.
func FileConn(f *os.File, lim Limits) (*Conn, error) {
	defer f.Close()
	if err := checkFD(int(f.Fd()), seqpacket); err != nil {
		return nil, fmt.Errorf("handover: the handover socket: %w", err)
	}
	nc, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("handover: the handover socket: %w", err)
	}
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		nc.Close()
		return nil, fmt.Errorf("handover: the handover socket is a %T", nc)
	}
	if lim.MaxTotalFDs <= 0 {
		lim.MaxTotalFDs = DefaultMaxTotalFDs
	}
	if lim.Timeout <= 0 {
		lim.Timeout = DefaultTimeout
	}
	return &Conn{uc: uc, lim: lim}, nil
}

// Close closes the Conn; descriptors received stay open (the caller owns
// them).
func (c *Conn) Close() error { return c.uc.Close() }

// CloseRead ends what the peer may send: each send of its from here on
// fails (EPIPE), and Recv returns what it sent before, then io.EOF. The
// kernel orders the two, so a peer whose send succeeded knows this side
// will read the message: the old process of an upgrade that stopped
// waiting for a word (Adopted) shuts the way first, then reads what came.
func (c *Conn) CloseRead() error { return c.uc.CloseRead() }

// PeerGone tells that err, from a Send or a Recv (wrapped or not), means
// the peer closed its end: it exited or gave up. A timeout is not that:
// the peer may be slow, and alive.
func PeerGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET)
}

// Version is the format this end speaks with its peer: 0 until agreed on
// (the old process: the hello read; the new one: the first message read
// after its hello). Every message sent after is framed with it, and every
// message received must be.
func (c *Conn) Version() uint16 { return c.version }

// SendHello sends the new process's hello: framed as MinVersion, which
// every release reads, naming Version as the highest it speaks.
func (c *Conn) SendHello(note string) error {
	return c.send(MinVersion, Message{Kind: Hello, Note: note, Count: Version}, nil)
}

// Timeout is how long each send and receive waits at most.
func (c *Conn) Timeout() time.Duration { return c.lim.Timeout }

// Send sends m with fds attached, one per record (m.Records), within the
// Conn's timeout, framed with the agreed version (Version until one is
// agreed). The descriptors stay open here: the peer receives duplicates.
func (c *Conn) Send(m Message, fds []int) error {
	v := c.version
	if v == 0 {
		v = Version
	}
	return c.send(v, m, fds)
}

func (c *Conn) send(v uint16, m Message, fds []int) error {
	if len(fds) != len(m.Records) {
		return fmt.Errorf("handover: %d descriptors for %d records", len(fds), len(m.Records))
	}
	b, err := EncodeVersion(c.out[:0], v, m)
	if err != nil {
		return err
	}
	c.out = b
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := c.uc.SetWriteDeadline(time.Now().Add(c.lim.Timeout)); err != nil {
		return err
	}
	n, oobn, err := c.uc.WriteMsgUnix(b, oob, nil)
	if err != nil {
		return fmt.Errorf("handover: send %s: %w", m.Kind, err)
	}
	if n != len(b) || oobn != len(oob) {
		return fmt.Errorf("handover: send %s: %d of %d bytes", m.Kind, n, len(b))
	}
	return nil
}

// Recv receives the next message and its descriptors, which the caller
// then owns (close-on-exec, each checked to be of its record's type). A
// message that breaks a bound, carries descriptors that do not match its
// records or crosses MaxTotalFDs is refused, and every descriptor it
// carried is closed. A peer that closed its end gives io.EOF. The first
// message received agrees on the version (a hello: Negotiate; anything
// else: its frame's, which the old process chose); one of another version
// after it is refused (ErrVersion).
func (c *Conn) Recv() (Message, []*os.File, error) {
	if c.in == nil {
		c.in = make([]byte, MaxMessage+1) // +1: a longer message shows as one over the bound
	}
	if c.oob == nil {
		c.oob = make([]byte, unix.CmsgSpace(4*MaxFDsPerMessage))
	}
	if err := c.uc.SetReadDeadline(time.Now().Add(c.lim.Timeout)); err != nil {
		return Message{}, nil, err
	}
	// On Linux the runtime asks for MSG_CMSG_CLOEXEC: no descriptor leaks
	// into a process started meanwhile.
	n, oobn, flags, _, err := c.uc.ReadMsgUnix(c.in, c.oob)
	fds, ferr := parseRights(c.oob[:oobn])
	if err == nil && n == 0 && oobn == 0 {
		err = io.EOF // a seqpacket peer that closed reads as an empty message
	}
	if err == nil {
		err = ferr
	}
	if err == nil && flags&unix.MSG_CTRUNC != 0 {
		err = fmt.Errorf("%w: more than %d descriptors attached", ErrBounds, MaxFDsPerMessage)
	}
	if err == nil && (flags&unix.MSG_TRUNC != 0 || n > MaxMessage) {
		err = fmt.Errorf("%w: more than %d bytes", ErrBounds, MaxMessage)
	}
	var m Message
	var v uint16
	if err == nil {
		m, v, err = DecodeVersion(c.in[:n])
	}
	if err == nil {
		err = c.agree(m, v)
	}
	if err == nil {
		err = c.take(m, fds)
	}
	if err != nil {
		closeAll(fds)
		return Message{}, nil, err
	}
	files := make([]*os.File, len(fds))
	for i, fd := range fds {
		files[i] = os.NewFile(uintptr(fd), m.Records[i].Name)
	}
	return m, files, nil
}

// agree checks m's version v against the one agreed on, or agrees on one.
func (c *Conn) agree(m Message, v uint16) error {
	switch {
	case c.version != 0 && v != c.version:
		return fmt.Errorf("%w: a %s of version %d, after version %d was agreed on", ErrVersion, m.Kind, v, c.version)
	case c.version != 0:
		return nil
	case m.Kind == Hello:
		agreed, err := Negotiate(m, v)
		if err != nil {
			return err
		}
		c.version = agreed
	default:
		c.version = v
	}
	return nil
}

// take checks the descriptors against m's records and the total bound.
func (c *Conn) take(m Message, fds []int) error {
	if len(fds) != len(m.Records) {
		return fmt.Errorf("%w: %d descriptors for %d records", ErrFormat, len(fds), len(m.Records))
	}
	if c.taken+len(fds) > c.lim.MaxTotalFDs {
		return fmt.Errorf("%w: more than %d descriptors in all", ErrBounds, c.lim.MaxTotalFDs)
	}
	for i, fd := range fds {
		if err := checkFD(fd, m.Records[i].Type); err != nil {
			return fmt.Errorf("handover: record %d (%q): %w", i, m.Records[i].Name, err)
		}
	}
	c.taken += len(fds)
	return nil
}

// parseRights returns the descriptors of oob's SCM_RIGHTS messages; any
// other control message is an error (its descriptors are still returned,
// to be closed).
func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("%w: control message: %v", ErrFormat, err)
	}
	var fds []int
	var bad error
	for _, cm := range msgs {
		r, err := unix.ParseUnixRights(&cm)
		if err != nil {
			bad = fmt.Errorf("%w: control message level %d type %d", ErrFormat, cm.Header.Level, cm.Header.Type)
			continue
		}
		fds = append(fds, r...)
	}
	return fds, bad
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// seqpacket is checkFD's word for the handover socket itself.
const seqpacket FDType = 0

// checkFD reports whether fd is what want says.
func checkFD(fd int, want FDType) error {
	if want == Pipe {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return os.NewSyscallError("fstat", err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFIFO {
			return fmt.Errorf("%w: not a pipe (mode %#o)", ErrType, st.Mode&unix.S_IFMT)
		}
		return nil
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fmt.Errorf("%w: not a socket: %v", ErrType, err)
	}
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return os.NewSyscallError("getsockopt", err)
	}
	listening, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return os.NewSyscallError("getsockopt", err)
	}
	inet := domain == unix.AF_INET || domain == unix.AF_INET6
	var ok bool
	switch want {
	case seqpacket:
		ok = domain == unix.AF_UNIX && typ == unix.SOCK_SEQPACKET
	case TCPListener:
		ok = inet && typ == unix.SOCK_STREAM && listening == 1
	case UnixListener:
		ok = domain == unix.AF_UNIX && typ == unix.SOCK_STREAM && listening == 1
	case UDPSocket:
		ok = inet && typ == unix.SOCK_DGRAM
	case TCPConn:
		ok = inet && typ == unix.SOCK_STREAM && listening == 0
	case UnixConn:
		ok = domain == unix.AF_UNIX && typ == unix.SOCK_STREAM && listening == 0
	}
	if !ok {
		return fmt.Errorf("%w: want a %s, got a socket of domain %d, type %d, listening %d", ErrType, want, domain, typ, listening)
	}
	return nil
}

// ErrType: a descriptor received is not of the type its record names.
var ErrType = errors.New("handover: descriptor of the wrong type")

// TakeFDs turns the files of a received message into the raw descriptors
// a loop reads, and closes the files: each is a duplicate, close-on-exec
// and non-blocking whatever the sender left set (f.Fd would make it
// blocking; a loop never blocks in a read, and a pipe that holds less than
// its state says reads as short, not as a wait). On error it closes the
// duplicates it made and returns none.
func TakeFDs(files []*os.File) ([]int, error) {
	fds := make([]int, 0, len(files))
	var err error
	for _, f := range files {
		if err == nil {
			var fd int
			if fd, err = dupNonblock(f); err == nil {
				fds = append(fds, fd)
			}
		}
		f.Close()
	}
	if err != nil {
		closeAll(fds)
		return nil, err
	}
	return fds, nil
}

func dupNonblock(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, dupErr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	if dupErr != nil {
		return -1, os.NewSyscallError("fcntl", dupErr)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("fcntl", err)
	}
	return fd, nil
}
