package handover

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// bound is how long any single wait of these tests may take before it
// fails.
const bound = 10 * time.Second

// childEnv makes the test binary the new process of TestPassToProcess.
const childEnv = "PROTOPLEX_HANDOVER_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		if err := child(); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// child is the new process: it takes what it inherited on fd 3, serves
// each socket once and acknowledges with what it read from the pipe.
func child() error {
	c, err := FileConn(os.NewFile(3, "handover"), Limits{Timeout: bound})
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Send(Message{Kind: Hello, Note: "child"}, nil); err != nil {
		return err
	}
	m, files, err := c.Recv()
	if err != nil {
		return err
	}
	done, _, err := c.Recv()
	if err != nil || done.Kind != Done || int(done.Count) != len(files) {
		return fmt.Errorf("done: %+v, %v", done, err)
	}
	note, err := takeOver(m, files)
	if err != nil {
		_ = c.Send(Message{Kind: Refuse, Note: err.Error()}, nil)
		return err
	}
	return c.Send(Message{Kind: Ack, Count: uint32(len(files)), Note: note}, nil)
}

// world is the sockets the old process hands over, each holding bytes
// nobody has read yet, and the far ends that check what the new process
// does with them.
type world struct {
	msg  Message
	fds  []int
	keep []io.Closer // the old process's copies, closed once sent

	queued   net.Conn       // a client in the listener's accept queue, its bytes sent
	client   net.Conn       // the far end of the connected pair
	peer     net.PacketConn // sent a datagram to the UDP socket
	udpAddr  net.Addr
	unread   []byte // in the connected socket's receive queue
	inPipe   []byte // in the pipe
	datagram []byte
}

// newWorld builds the sockets: a TCP listener with a connection waiting in
// its accept queue, a connected TCP socket with 32 KiB unread, a UDP socket
// with a datagram unread and a pipe holding 32 KiB.
func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{unread: random(32<<10, 1), inPipe: random(32<<10, 2), datagram: random(1200, 3)}
	t.Cleanup(func() {
		for _, c := range w.keep {
			c.Close()
		}
	})
	add := func(typ FDType, name string, f *os.File, c io.Closer) {
		w.msg.Records = append(w.msg.Records, Record{Type: typ, Name: name})
		w.fds = append(w.fds, int(f.Fd()))
		w.keep = append(w.keep, f, c)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lf, _ := ln.(*net.TCPListener).File()
	add(TCPListener, "listener", lf, ln)
	w.queued = dial(t, ln.Addr().String())
	if _, err := w.queued.Write([]byte("queued")); err != nil {
		t.Fatal(err)
	}

	ln2 := testnet.Listen(t)
	w.client = dial(t, ln2.Addr().String())
	server, err := ln2.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.client.Write(w.unread); err != nil {
		t.Fatal(err)
	}
	cf, _ := server.(*net.TCPConn).File()
	add(TCPConn, "conn", cf, server)

	u, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w.udpAddr = u.LocalAddr()
	if w.peer, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.peer.Close() })
	if _, err := w.peer.WriteTo(w.datagram, w.udpAddr); err != nil {
		t.Fatal(err)
	}
	uf, _ := u.(*net.UDPConn).File()
	add(UDPSocket, "udp", uf, u)

	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pw.Write(w.inPipe); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	add(Pipe, "pipe", pr, io.NopCloser(nil))
	w.msg.Kind = FDs
	return w
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, bound)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(bound))
	return c
}

// digest names b in a note: its length and SHA-256.
func digest(b []byte) string { return fmt.Sprintf("%d bytes %x", len(b), sha256.Sum256(b)) }

func random(n int, seed byte) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

// send is the old process's side: the sockets, Done, then its own copies
// closed — from here on only the new process holds them.
func (w *world) send(c *Conn) error {
	if err := c.Send(w.msg, w.fds); err != nil {
		return err
	}
	if err := c.Send(Message{Kind: Done, Count: uint32(len(w.fds))}, nil); err != nil {
		return err
	}
	for _, k := range w.keep {
		k.Close()
	}
	w.keep = nil
	return nil
}

// takeOver is the new process's side: it accepts the waiting client and
// answers it with what it sent, answers the connected client with what it
// had sent before the handover, answers the datagram from the same
// socket, and returns the pipe's bytes (their digest) as its note.
func takeOver(m Message, files []*os.File) (string, error) {
	var note string
	for i, f := range files {
		err := func() error {
			defer f.Close()
			switch m.Records[i].Name {
			case "listener":
				ln, err := net.FileListener(f)
				if err != nil {
					return err
				}
				defer ln.Close()
				_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(bound))
				c, err := ln.Accept()
				if err != nil {
					return err
				}
				defer c.Close()
				got := make([]byte, len("queued"))
				if _, err := io.ReadFull(c, got); err != nil {
					return err
				}
				_, err = c.Write(append([]byte("accepted:"), got...))
				return err
			case "conn":
				c, err := net.FileConn(f)
				if err != nil {
					return err
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(bound))
				got := make([]byte, 32<<10)
				if _, err := io.ReadFull(c, got); err != nil {
					return err
				}
				_, err = c.Write(got)
				return err
			case "udp":
				pc, err := net.FilePacketConn(f)
				if err != nil {
					return err
				}
				defer pc.Close()
				_ = pc.SetDeadline(time.Now().Add(bound))
				b := make([]byte, 2048)
				n, from, err := pc.ReadFrom(b)
				if err != nil {
					return err
				}
				_, err = pc.WriteTo(b[:n], from)
				return err
			case "pipe":
				b, err := io.ReadAll(f)
				note = digest(b)
				return err
			}
			return fmt.Errorf("record %q", m.Records[i].Name)
		}()
		if err != nil {
			return "", fmt.Errorf("%s: %w", m.Records[i].Name, err)
		}
	}
	return note, nil
}

// check verifies, from the far ends, that every byte survived.
func (w *world) check(t *testing.T, note string) {
	t.Helper()
	if got, err := io.ReadAll(w.queued); string(got) != "accepted:queued" || err != nil {
		t.Errorf("the client queued on the listener read %q, %v", got, err)
	}
	got := make([]byte, len(w.unread))
	if _, err := io.ReadFull(w.client, got); err != nil || !bytes.Equal(got, w.unread) {
		t.Errorf("the connected client: %v; its %d unread bytes did not come back whole", err, len(w.unread))
	}
	_ = w.peer.SetDeadline(time.Now().Add(bound))
	b := make([]byte, 2048)
	n, from, err := w.peer.ReadFrom(b)
	if err != nil || !bytes.Equal(b[:n], w.datagram) {
		t.Errorf("the UDP peer: %v; the datagram did not come back whole", err)
	}
	if from != nil && from.String() != w.udpAddr.String() {
		t.Errorf("the UDP reply came from %s, not the socket handed over (%s)", from, w.udpAddr)
	}
	if note != digest(w.inPipe) {
		t.Errorf("the pipe's bytes did not survive: read %s, want %s", note, digest(w.inPipe))
	}
}

// pair is the two ends of a new handover socket, each waiting at most
// bound; the caller closes them.
func pair(t *testing.T) (old, next *Conn) {
	t.Helper()
	old, peer, err := Pair(Limits{Timeout: bound})
	if err != nil {
		t.Fatal(err)
	}
	next, err = FileConn(peer, Limits{Timeout: bound})
	if err != nil {
		old.Close()
		t.Fatal(err)
	}
	return old, next
}

// TestPassBetweenGoroutines: a listener with a client waiting, a connected
// TCP socket with bytes unread, a UDP socket with a datagram unread and a
// pipe with bytes in it go over the handover socket, and every byte is
// still there on the other side.
func TestPassBetweenGoroutines(t *testing.T) {
	old, next := pair(t)
	defer old.Close()
	defer next.Close()
	w := newWorld(t)
	sent := make(chan error, 1)
	go func() { sent <- w.send(old) }()
	m, files, err := next.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if done, _, err := next.Recv(); err != nil || done.Kind != Done || int(done.Count) != len(files) {
		t.Fatalf("done: %+v, %v", done, err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	note, err := takeOver(m, files)
	if err != nil {
		t.Fatal(err)
	}
	w.check(t, note)
}

// TestPassToProcess: the same, to another process that inherited its end
// of the handover socket as fd 3 — the way an upgrade starts the new
// binary — which says hello first and acknowledges last.
func TestPassToProcess(t *testing.T) {
	old, peer, err := Pair(Limits{Timeout: bound})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.ExtraFiles = []*os.File{peer}
	p := testnet.StartProcess(t, cmd)
	peer.Close()
	w := newWorld(t)

	hello, _, err := old.Recv()
	if err != nil || hello.Kind != Hello {
		t.Fatalf("hello: %+v, %v; child:\n%s", hello, err, p.Out)
	}
	if err := w.send(old); err != nil {
		t.Fatal(err)
	}
	ack, _, err := old.Recv()
	if err != nil || ack.Kind != Ack || int(ack.Count) != len(w.fds) {
		werr := p.Wait()
		t.Fatalf("ack: %+v, %v; child (%v):\n%s", ack, err, werr, p.Out)
	}
	w.check(t, ack.Note)
	if err := p.Wait(); err != nil {
		t.Errorf("child: %v\n%s", err, p.Out)
	}
}

// openFDs is the number of descriptors the process holds.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestRecvRejects: a descriptor that is not what its record says, a
// message over the total bound and a message of another version are each
// refused, and every descriptor they carried is closed.
func TestRecvRejects(t *testing.T) {
	pipe := func(t *testing.T) int {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close(); w.Close() })
		return int(r.Fd())
	}
	for _, tc := range []struct {
		name  string
		lim   Limits
		types []FDType
		want  error
	}{
		{"a pipe said to be a listener", Limits{}, []FDType{Pipe, TCPListener}, ErrType},
		{"a pipe said to be a UDP socket", Limits{}, []FDType{UDPSocket}, ErrType},
		{"over the total", Limits{MaxTotalFDs: 2}, []FDType{Pipe, Pipe, Pipe}, ErrBounds},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old, peer, err := Pair(Limits{Timeout: bound})
			if err != nil {
				t.Fatal(err)
			}
			defer old.Close()
			tc.lim.Timeout = bound
			next, err := FileConn(peer, tc.lim)
			if err != nil {
				t.Fatal(err)
			}
			defer next.Close()
			m := Message{Kind: FDs}
			var fds []int
			for _, typ := range tc.types {
				m.Records = append(m.Records, Record{Type: typ})
				fds = append(fds, pipe(t))
			}
			if err := old.Send(m, fds); err != nil {
				t.Fatal(err)
			}
			before := openFDs(t)
			if _, files, err := next.Recv(); !errors.Is(err, tc.want) || files != nil {
				t.Errorf("Recv: %d files, %v; want %v", len(files), err, tc.want)
			}
			if after := openFDs(t); after != before {
				t.Errorf("%d descriptors open after the refused message, %d before", after, before)
			}
		})
	}

	t.Run("another version", func(t *testing.T) {
		old, next := pair(t)
		defer old.Close()
		defer next.Close()
		b, _ := Encode(nil, Message{Kind: FDs, Records: []Record{{Type: Pipe}}})
		b[5] = Version + 1
		before := openFDs(t)
		if _, _, err := old.uc.WriteMsgUnix(b, unix.UnixRights(pipe(t)), nil); err != nil {
			t.Fatal(err)
		}
		if _, _, err := next.Recv(); !errors.Is(err, ErrVersion) {
			t.Errorf("Recv: %v, want ErrVersion", err)
		}
		if after := openFDs(t); after != before+2 { // the pipe's own two ends
			t.Errorf("%d descriptors open after the refused message, want %d", after, before+2)
		}
	})
}

// TestTimeouts: a peer that sends nothing, or reads nothing, holds the
// other for the Conn's timeout at most; a peer that closed reads as EOF.
func TestTimeouts(t *testing.T) {
	old, peer, err := Pair(Limits{Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	next, err := FileConn(peer, Limits{Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := old.Recv(); !errors.Is(err, os.ErrDeadlineExceeded) || PeerGone(err) {
		t.Errorf("Recv from a silent peer: %v (PeerGone %v)", err, PeerGone(err))
	}
	big := Message{Kind: Refuse, Note: strings.Repeat("x", MaxNote)}
	var serr error
	for i := 0; i < 100_000 && serr == nil; i++ { // until the socket's buffer is full
		serr = old.Send(big, nil)
	}
	if !errors.Is(serr, os.ErrDeadlineExceeded) {
		t.Errorf("Send to a peer that does not read: %v", serr)
	}
	next.Close()
	old2, peer2, err := Pair(Limits{Timeout: bound})
	if err != nil {
		t.Fatal(err)
	}
	defer old2.Close()
	peer2.Close()
	if _, _, err := old2.Recv(); !errors.Is(err, io.EOF) || !PeerGone(err) {
		t.Errorf("Recv after the peer closed: %v, want EOF (PeerGone %v)", err, PeerGone(err))
	}
	if err := old2.Send(Message{Kind: Done}, nil); !PeerGone(err) {
		t.Errorf("Send after the peer closed: %v, want PeerGone", err)
	}
	if PeerGone(fmt.Errorf("no acknowledgement: %w", os.ErrDeadlineExceeded)) || !PeerGone(fmt.Errorf("no adoption: %w", io.EOF)) {
		t.Error("PeerGone does not look through wrapping")
	}
}

// TestCloseRead: once a Conn shut its reading side, the peer's sends
// fail, and what it sent before is still read, then EOF: the old process
// that stops waiting for an Adopted either reads it or the new process
// learns that its word did not arrive.
func TestCloseRead(t *testing.T) {
	old, next := pair(t)
	defer old.Close()
	defer next.Close()
	if err := next.Send(Message{Kind: Adopted, Count: 7}, nil); err != nil {
		t.Fatal(err)
	}
	if err := old.CloseRead(); err != nil {
		t.Fatal(err)
	}
	if err := next.Send(Message{Kind: Adopted, Count: 8}, nil); !errors.Is(err, unix.EPIPE) {
		t.Errorf("a send after the peer's CloseRead: %v, want EPIPE", err)
	}
	if m, _, err := old.Recv(); err != nil || m.Kind != Adopted || m.Count != 7 {
		t.Errorf("the message sent before: %+v, %v", m, err)
	}
	if _, _, err := old.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("after it: %v, want EOF", err)
	}
}

// TestVersionAgreed: over a real socket, the new process's hello (framed
// 1, naming 2) makes both ends speak 2; a first release's hello (framed 1,
// naming nothing) makes the old end speak 1 to it, its answers framed so a
// first release reads them; a message of another version once one is
// agreed is refused, and its descriptors closed.
func TestVersionAgreed(t *testing.T) {
	t.Run("this release", func(t *testing.T) {
		old, next := pairClosed(t)
		if err := next.SendHello("next"); err != nil {
			t.Fatal(err)
		}
		if m, _, err := old.Recv(); err != nil || m.Kind != Hello || old.Version() != Version {
			t.Fatalf("hello: %+v, %v, version %d", m, err, old.Version())
		}
		if next.Version() != 0 {
			t.Fatalf("the new end agreed on %d before the old one answered", next.Version())
		}
		if err := old.Send(Message{Kind: Done}, nil); err != nil {
			t.Fatal(err)
		}
		if m, _, err := next.Recv(); err != nil || m.Kind != Done || next.Version() != Version {
			t.Fatalf("done: %+v, %v, version %d", m, err, next.Version())
		}
		// A later message framed 1 (a peer changing its mind) is refused.
		if err := old.send(1, Message{Kind: Ack}, nil); err != nil {
			t.Fatal(err)
		}
		if _, _, err := next.Recv(); !errors.Is(err, ErrVersion) {
			t.Fatalf("a version 1 message after version 2: %v", err)
		}
	})
	t.Run("first release", func(t *testing.T) {
		old, next := pairClosed(t)
		// 6abb019's hello: Encode of its version 1, Count 0.
		if err := next.send(1, Message{Kind: Hello, Note: "protoplex 6abb019"}, nil); err != nil {
			t.Fatal(err)
		}
		if m, _, err := old.Recv(); err != nil || m.Kind != Hello || old.Version() != 1 {
			t.Fatalf("hello: %+v, %v, version %d", m, err, old.Version())
		}
		if err := old.Send(Message{Kind: Refuse, Note: "no"}, nil); err != nil {
			t.Fatal(err)
		}
		raw := make([]byte, MaxMessage)
		n, err := next.uc.Read(raw)
		if err != nil {
			t.Fatal(err)
		}
		if m, v, err := DecodeVersion(raw[:n]); err != nil || v != 1 || m.Kind != Refuse {
			t.Fatalf("the answer to a first release: %+v, version %d, %v", m, v, err)
		}
		// A format-2 word to a peer agreed on 1 is refused, not written.
		if err := old.Send(Message{Kind: Adopted}, nil); !errors.Is(err, ErrFormat) {
			t.Fatalf("an adopted sent in version 1: %v", err)
		}
	})
	t.Run("hostile frames", func(t *testing.T) {
		for _, v := range []uint16{0, 3, 65535} {
			old, next := pairClosed(t)
			b, _ := Encode(nil, Message{Kind: Hello, Count: Version})
			b[4], b[5] = byte(v>>8), byte(v)
			if _, err := next.uc.Write(b); err != nil {
				t.Fatal(err)
			}
			if _, _, err := old.Recv(); !errors.Is(err, ErrVersion) || old.Version() != 0 {
				t.Errorf("a hello framed %d: %v, version %d agreed", v, err, old.Version())
			}
		}
	})
}

// pairClosed is pair, closed when the test ends.
func pairClosed(t *testing.T) (old, next *Conn) {
	old, next = pair(t)
	t.Cleanup(func() { old.Close(); next.Close() })
	return old, next
}
