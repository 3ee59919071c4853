//go:build linux

package evloop_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/config"
	"github.com/darkit/protoplex/internal/evloop"
	"github.com/darkit/protoplex/internal/handover"
	"github.com/darkit/protoplex/internal/proxyproto"
	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/protocols"
)

// inState waits until r's plane lists one connection, in state.
func inState(t *testing.T, r *rig, state string) {
	t.Helper()
	testnet.Eventually(t, bound, func() bool {
		st := r.plane.Connections(10)
		return len(st) == 1 && st[0].State == state
	}, "the connection is not %s: %v", state, testnet.Later(func() string { return fmt.Sprint(r.plane.Connections(10)) }))
}

// stalledBackend is a Unix socket backend that accepts and reads nothing
// until the test says: a stream socket's sender may queue no more than
// its send buffer (wmem_default, some 200 KiB) towards it, so a replay
// larger than that stalls.
type stalledBackend struct {
	path string
	conn chan net.Conn
}

func newStalledBackend(t *testing.T, flight int) *stalledBackend {
	if b, err := os.ReadFile("/proc/sys/net/core/wmem_default"); err == nil {
		if n, _ := strconv.Atoi(strings.TrimSpace(string(b))); n > flight/2 {
			t.Skipf("net.core.wmem_default is %d: a replay of %d bytes to a Unix socket may not stall", n, flight)
		}
	}
	path := filepath.Join(t.TempDir(), "b.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	b := &stalledBackend{path: path, conn: make(chan net.Conn, 4)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.conn <- c
		}
	}()
	t.Cleanup(func() {
		for {
			select {
			case c := <-b.conn:
				c.Close()
			default:
				return
			}
		}
	})
	return b
}

// bigFlight is a protocol whose first flight is the n bytes of payload(n)
// (identification reads them all before it decides), forwarded to a
// Unix socket at path behind a PROXY v2 header.
func bigFlight(n int, path string) (*protocols.Protocol, []byte) {
	want := payload(n)
	p := routeFor("BIG", string(want), "unix:"+path)
	p.SendProxy = "v2"
	return p, want
}

// TestMoveReplay: a pair whose backend has not taken its replay — the
// PROXY header and a first flight larger than the socket towards the
// backend holds — moves mid-replay: the backend then receives the header
// and the first flight exactly once, whole and in order, then what the
// client sends after, all from the new process. Restored instead, the
// replay goes on in the old process the same way; aborted while out, it
// ends there, counted.
func TestMoveReplay(t *testing.T) {
	const flight = 512 << 10
	backend := newStalledBackend(t, flight)
	big := func(s *setup) { s.srv.BufferSize = 1 << 20 }
	old := newRig(t, []*protocols.Protocol{must(bigFlight(flight, backend.path))}, big)
	nu := newRig(t, []*protocols.Protocol{must(bigFlight(flight, backend.path))}, big)
	_, want := bigFlight(flight, backend.path)

	for _, how := range []string{"moved", "restored"} {
		c := old.dial()
		wrote := make(chan error, 1)
		go func() { _, err := c.Write(want); wrote <- err }()
		inState(t, old, "replaying")
		be := <-backend.conn
		var fds int
		switch how {
		case "moved":
			var n int
			n, fds = move(t, old.plane, nu.plane)
			if n != 1 || fds != 4 {
				t.Fatalf("%s: moved %d connections with %d descriptors, want 1 with 4 (client, backend, a pipe with the replay left)", how, n, fds)
			}
			old.idle()
		case "restored":
			batch := old.plane.Detach(handover.MaxFDsPerMessage)
			if batch == nil || len(batch.FDs) != 4 {
				t.Fatalf("detached %+v", batch)
			}
			old.plane.Restore(batch)
		}
		if err := <-wrote; err != nil {
			t.Fatal(err)
		}
		tail := []byte("and after the first flight\n")
		if _, err := c.Write(tail); err != nil {
			t.Fatal(err)
		}
		c.CloseWrite()
		got, err := readAll(be)
		be.Close()
		if err != nil {
			t.Fatalf("%s: the backend read %d bytes: %v", how, len(got), err)
		}
		h, hl, err := proxyproto.Parse(got)
		if err != nil {
			t.Fatalf("%s: the backend's stream does not start with a PROXY header: %v (%q)", how, err, got[:min(len(got), 32)])
		}
		if h.Source != c.LocalAddr().(*net.TCPAddr).AddrPort() {
			t.Errorf("%s: the PROXY header names %v, the client is %v", how, h.Source, c.LocalAddr())
		}
		sameBytes(t, how+": the backend's stream after the header", got[hl:], append(bytes.Clone(want), tail...))
		c.Close()
	}
	nu.waitMetric(1, "protoplex_connections_closed_total", "protocol=BIG", "reason=done")
	old.waitMetric(1, "protoplex_connections_closed_total", "protocol=BIG", "reason=done")
	if up := nu.metric("protoplex_forwarded_bytes_total", "protocol=BIG", "direction=client_to_backend"); up != float64(flight+len("and after the first flight\n")) {
		t.Errorf("the new plane counts %v bytes up, want the first flight and the tail (the header is not counted)", up)
	}
	if n := strings.Count(old.log.String(), "connection closed"); n != 1 {
		t.Errorf("the old plane logged %d closes, want 1 (the restored one):\n%s", n, old.log)
	}

	// Aborted while its batch was out: it ends in the old process.
	c := old.dial()
	go c.Write(want)
	inState(t, old, "replaying")
	be := <-backend.conn
	defer be.Close()
	batch := old.plane.Detach(handover.MaxFDsPerMessage)
	old.conns.CloseAll()
	old.plane.Restore(batch)
	old.waitMetric(1, "protoplex_connections_closed_total", "protocol=BIG", "reason=drain")
	old.idle()
}

func must(p *protocols.Protocol, _ []byte) *protocols.Protocol { return p }

// TestMoveProxyHeader: a connection whose trusted sender's PROXY header
// has come in part moves with those bytes: the new process reads the
// rest, takes the client it names, and identifies and forwards what
// follows. Restored instead, it reads on in the old process.
func TestMoveProxyHeader(t *testing.T) {
	echo := testnet.Echo(t)
	trust := func(s *setup) {
		s.srv.AcceptProxy = true
		s.trusted = config.Prefixes{netip.MustParsePrefix("127.0.0.0/8")}
	}
	old := newRig(t, []*protocols.Protocol{route("ECHO", echo)}, trust)
	nu := newRig(t, []*protocols.Protocol{route("ECHO", echo)}, trust)
	for i, how := range []string{"moved", "restored"} {
		c := old.dial()
		if _, err := io.WriteString(c, "PROXY TCP4 192.0.2."); err != nil {
			t.Fatal(err)
		}
		inState(t, old, "proxy_header")
		plane := nu
		switch how {
		case "moved":
			if n, fds := move(t, old.plane, nu.plane); n != 1 || fds != 3 {
				t.Fatalf("moved %d connections with %d descriptors, want 1 with 3 (the client, a pipe with the header so far)", n, fds)
			}
			old.idle()
		case "restored":
			batch := old.plane.Detach(handover.MaxFDsPerMessage)
			if batch == nil || len(batch.FDs) != 3 {
				t.Fatalf("detached %+v", batch)
			}
			old.plane.Restore(batch)
			plane = old
		}
		client := fmt.Sprintf("192.0.2.%d:4000%d", 7+i, i)
		rest := fmt.Sprintf("%d 192.0.2.1 4000%d 443\r\nHELLO %s\n", 7+i, i, how)
		if _, err := io.WriteString(c, rest); err != nil {
			t.Fatal(err)
		}
		msg := "HELLO " + how + "\n"
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
			t.Fatalf("%s: %q, %v; log:\n%s", how, buf, err, plane.log)
		}
		if st := plane.plane.Connections(10); len(st) != 1 || st[0].Client != client {
			t.Errorf("%s: the connection's client is %+v, want %s from the header", how, st, client)
		}
		c.Close()
		plane.waitMetric(1, "protoplex_connections_closed_total", "protocol=ECHO", "reason=done")
	}
	if n := strings.Count(old.log.String(), "connection closed"); n != 1 {
		t.Errorf("the old plane logged %d closes, want 1 (the restored one):\n%s", n, old.log)
	}

	// The new process no longer trusts the sender: what it sent is a
	// first flight there, and a PROXY header from an untrusted source is
	// refused, as on a fresh connection.
	distrust := newRig(t, []*protocols.Protocol{route("ECHO", echo)}, func(s *setup) { s.srv.AcceptProxy = true })
	c := old.dial()
	if _, err := io.WriteString(c, "PROXY TCP4 192.0.2."); err != nil {
		t.Fatal(err)
	}
	inState(t, old, "proxy_header")
	if n, _ := move(t, old.plane, distrust.plane); n != 1 {
		t.Fatalf("moved %d", n)
	}
	io.WriteString(c, "9 192.0.2.1 40009 443\r\nHELLO\n")
	if got, _ := readAll(c); len(got) != 0 {
		t.Errorf("an untrusted PROXY header was served: %q", got)
	}
	distrust.waitMetric(1, "protoplex_connections_refused_total", "reason=proxy_header")
}

// TestMoveDialing: a connection whose backend is dialed off the loop (a
// source address) and hangs moves with the bytes it sent, nothing of them
// sent: the old process abandons the dial (its goroutine ends, and the
// socket it may still get is closed), the new one identifies the bytes
// again and dials its own target. Restored instead, the dial goes on in
// the old process; aborted while out, it ends there as a drained dial.
func TestMoveDialing(t *testing.T) {
	stuck := stuckAddr(t)
	offLoop := route("ECHO", stuck)
	offLoop.Source = []string{"127.0.0.1"} // a source address: dialed on a goroutine
	old := newRig(t, []*protocols.Protocol{offLoop}, func(s *setup) { s.srv.DialTimeout = time.Minute })
	nu := newRig(t, []*protocols.Protocol{route("ECHO", testnet.Echo(t))})
	dialing := func() net.Conn {
		c := old.dial()
		if _, err := c.Write([]byte("HELLO dial\n")); err != nil {
			t.Fatal(err)
		}
		inState(t, old, "dialing")
		return c
	}
	c := dialing()
	if n, fds := move(t, old.plane, nu.plane); n != 1 || fds != 3 {
		t.Fatalf("moved %d connections with %d descriptors, want 1 with 3 (the client, a pipe with its bytes)", n, fds)
	}
	old.idle() // the abandoned dial's goroutine is checked by goleak at the end
	buf := make([]byte, len("HELLO dial\n"))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "HELLO dial\n" {
		t.Fatalf("after the move: %q, %v; log:\n%s", buf, err, nu.log)
	}
	c.Close()
	nu.waitMetric(1, "protoplex_connections_closed_total", "protocol=ECHO", "reason=done")
	if n := strings.Count(old.log.String(), "connection closed"); n != 0 {
		t.Errorf("the old plane logged %d closes:\n%s", n, old.log)
	}
	if n := old.metric("protoplex_dial_errors_total"); n != 0 {
		t.Errorf("the abandoned dial counted as %v dial errors", n)
	}

	// Restored: still dialing in the old process, which a drain then
	// ends; aborted while out: it ends when it comes back.
	c = dialing()
	batch := old.plane.Detach(handover.MaxFDsPerMessage)
	if batch == nil || batch.Len() != 1 {
		t.Fatalf("detached %+v", batch)
	}
	old.plane.Restore(batch)
	inState(t, old, "dialing")
	batch = old.plane.Detach(handover.MaxFDsPerMessage)
	old.conns.CloseAll()
	old.plane.Restore(batch)
	old.waitMetric(1, "protoplex_connections_closed_total", "protocol=ECHO", "reason=dial_error")
	old.idle()
	if got, _ := readAll(c); len(got) != 0 {
		t.Errorf("read %q after the abort", got)
	}
}

// rawFD is c's descriptor, its flags left alone (an os.File's Fd would
// make the socket blocking, for the plane's duplicate too).
func rawFD(t *testing.T, c syscall.Conn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	if err := rc.Control(func(s uintptr) { fd = int(s) }); err != nil {
		t.Fatal(err)
	}
	return fd
}

// craftMoved sends nu one moved pair as an old process would — a client
// socket, a backend socket connected to backend and a pipe — which
// describe gives the state and the pipe's bytes of (Client and Target are
// filled in here), and prepares it. It returns the client, the backend's
// side and the prepared pair, whose sockets only nu's plane holds.
func craftMoved(t *testing.T, nu *rig, backend net.Listener, describe func(client net.Conn) (handover.ConnState, []byte)) (client, be net.Conn, prep *evloop.Prepared) {
	t.Helper()
	front := testnet.Listen(t)
	client, err := net.Dial("tcp", front.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	plSide, err := front.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer plSide.Close()
	plBackend, err := net.Dial("tcp", backend.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer plBackend.Close()
	be, err = backend.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	_ = be.SetDeadline(time.Now().Add(bound))
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	st, inPipe := describe(client)
	if _, err := w.Write(inPipe); err != nil {
		t.Fatal(err)
	}
	st.Client, st.Target = client.LocalAddr().String(), backend.Addr().String()
	m := handover.Message{Kind: handover.Conns}
	if err := handover.AppendConn(&m, st, handover.TCPConn, handover.TCPConn); err != nil {
		t.Fatal(err)
	}
	a, b := handoverPair(t)
	defer a.Close()
	defer b.Close()
	if err := a.Send(m, []int{rawFD(t, plSide.(*net.TCPConn)), rawFD(t, plBackend.(*net.TCPConn)), int(r.Fd()), int(w.Fd())}); err != nil {
		t.Fatal(err)
	}
	got, files, err := b.Recv()
	if err != nil {
		t.Fatal(err)
	}
	prep, err = nu.plane.Prepare(got, files)
	if err != nil {
		t.Fatal(err)
	}
	return client, be, prep
}

// adoptCrafted is craftMoved, the pair held and started on nu's plane.
func adoptCrafted(t *testing.T, nu *rig, backend net.Listener, describe func(client net.Conn) (handover.ConnState, []byte)) (client, be net.Conn) {
	t.Helper()
	client, be, prep := craftMoved(t, nu, backend, describe)
	if err := prep.Hold(); err != nil {
		t.Fatal(err)
	}
	if n := prep.Start(); n != 1 {
		t.Fatalf("adopted %d", n)
	}
	return client, be
}

// TestAdoptReplayHeaderLeft: a replay moved with part of its PROXY
// header still unsent (the new process cannot tell it from one whose
// header went whole) is written on exactly as it came — the header's
// rest, then the first flight — and the header's bytes are never counted
// as the client's. A replay whose pipe holds less than its state says (a
// hostile or broken old process) is never written with a hole in it: it
// cannot be held, and is given up unread and uncounted.
func TestAdoptReplayHeaderLeft(t *testing.T) {
	backend := testnet.Listen(t)
	nu := newRig(t, []*protocols.Protocol{route("ECHO", backend.Addr().String())})
	const sent = 9 // of the header, before the move
	flight := []byte("HELLO first flight\n")
	var left []byte
	client, be := adoptCrafted(t, nu, backend, func(client net.Conn) (handover.ConnState, []byte) {
		header := proxyproto.AppendV1(nil, proxyproto.Header{Source: client.LocalAddr().(*net.TCPAddr).AddrPort(), Dest: client.RemoteAddr().(*net.TCPAddr).AddrPort()})
		left = append(bytes.Clone(header[sent:]), flight...)
		return handover.ConnState{Protocol: "ECHO", Route: "ECHO", Replay: true, HeaderLeft: len(header) - sent,
			Up: handover.DirState{Pipe: true, Pending: len(left)}}, left
	})
	want := append(bytes.Clone(left), "and after\n"...)
	if _, err := io.WriteString(client, "and after\n"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(want))
	if _, err := io.ReadFull(be, buf); err != nil {
		t.Fatalf("the backend read %q: %v; log:\n%s", buf, err, nu.log)
	}
	sameBytes(t, "the backend's stream", buf, want)
	client.Close()
	be.Close()
	nu.waitMetric(1, "protoplex_connections_closed_total", "protocol=ECHO", "reason=done")
	if up := nu.metric("protoplex_forwarded_bytes_total", "protocol=ECHO", "direction=client_to_backend"); up != float64(len(flight)+len("and after\n")) {
		t.Errorf("forwarded up = %v, want %d: the header's rest is not the client's", up, len(flight)+len("and after\n"))
	}

	// The pipe holds 5 bytes of the 10 the state says.
	client, be, prep := craftMoved(t, nu, backend, func(net.Conn) (handover.ConnState, []byte) {
		return handover.ConnState{Protocol: "ECHO", Route: "ECHO", Replay: true, Up: handover.DirState{Pipe: true, Pending: 10}}, []byte("HELLO")
	})
	if err := prep.Hold(); err == nil {
		prep.Start()
		t.Fatal("a replay that came short was held")
	}
	if got, _ := readAll(be); len(got) != 0 {
		t.Errorf("the backend read %q from a replay that came short", got)
	}
	if got, _ := readAll(client); len(got) != 0 {
		t.Errorf("the client read %q", got)
	}
	nu.idle()
	if n := nu.metric("protoplex_connections_closed_total", "protocol=ECHO", "reason=error"); n != 0 {
		t.Errorf("the pair given up counted as %v errors", n)
	}
}

// TestMoveEveryState: one batch holds a connection in every state a loop
// can move — forwarding, its trusted PROXY header half read, identifying,
// connecting on the loop, dialing off it, and mid-replay — and each goes
// on in the new plane: the header is read on, the bytes identified, the
// dials made again, the replay written exactly.
func TestMoveEveryState(t *testing.T) {
	const flight = 512 << 10
	echo := testnet.Echo(t)
	stuck := stuckAddr(t)
	backend := newStalledBackend(t, flight)
	want := payload(flight)
	copy(want, "BIGGG")
	big := func() *protocols.Protocol {
		p := routeFor("BIG", string(want), "unix:"+backend.path)
		p.SendProxy = "v2"
		return p
	}
	offLoop := func(target string) *protocols.Protocol {
		p := routeFor("OFFLOOP", "SRC", target)
		p.Source = []string{"127.0.0.1"} // dialed on a goroutine
		return p
	}
	setup := func(s *setup) {
		s.srv.AcceptProxy = true
		s.trusted = config.Prefixes{netip.MustParsePrefix("127.0.0.0/8")}
		s.srv.BufferSize = 1 << 20
		s.srv.DialTimeout = time.Minute
	}
	old := newRig(t, []*protocols.Protocol{route("ECHO", echo), routeFor("STUCK", "STUCK", stuck), offLoop(stuck), big()}, setup)
	nu := newRig(t, []*protocols.Protocol{route("ECHO", echo), routeFor("STUCK", "STUCK", echo), offLoop(echo), big()}, setup)

	header := func(i int) string { return fmt.Sprintf("PROXY TCP4 192.0.2.%d 192.0.2.1 4000%d 443\r\n", i, i) }
	open := func(i int, first string) net.Conn {
		c := old.dial()
		if _, err := io.WriteString(c, header(i)+first); err != nil {
			t.Fatal(err)
		}
		return c
	}
	forwarded := open(1, "HELLO fwd\n")
	buf := make([]byte, len("HELLO fwd\n"))
	if _, err := io.ReadFull(forwarded, buf); err != nil {
		t.Fatal(err)
	}
	halfHeader := old.dial()
	io.WriteString(halfHeader, header(2)[:20])
	identifying := open(3, "HEL")
	connecting := open(4, "STUCK conn\n")
	dialing := open(5, "SRC dial\n")
	replaying := open(6, "")
	go replaying.Write(want)
	be := <-backend.conn
	states := []string{"connecting", "dialing", "forwarding", "identifying", "proxy_header", "replaying"}
	testnet.Eventually(t, bound, func() bool {
		var got []string
		for _, ci := range old.plane.Connections(10) {
			got = append(got, ci.State)
		}
		slices.Sort(got)
		return slices.Equal(got, states)
	}, "the connections are not in every state: %v", testnet.Later(func() string { return fmt.Sprint(old.plane.Connections(10)) }))

	if n, fds := move(t, old.plane, nu.plane); n != 6 || fds != 2+3+3+3+3+4 {
		t.Fatalf("moved %d connections with %d descriptors, want 6 with 18", n, fds)
	}
	old.idle()

	for _, x := range []struct {
		c         net.Conn
		send, got string
	}{
		{forwarded, "HELLO again\n", "HELLO again\n"},
		{halfHeader, header(2)[20:] + "HELLO header\n", "HELLO header\n"},
		{identifying, "LO id\n", "HELLO id\n"},
		{connecting, "", "STUCK conn\n"},
		{dialing, "", "SRC dial\n"},
	} {
		io.WriteString(x.c, x.send)
		buf := make([]byte, len(x.got))
		if _, err := io.ReadFull(x.c, buf); err != nil || string(buf) != x.got {
			t.Errorf("%q after the move: %q, %v", x.got, buf, err)
		}
		x.c.Close()
	}
	replaying.(*net.TCPConn).CloseWrite()
	got, err := readAll(be)
	be.Close()
	if err != nil {
		t.Fatalf("the backend read %d bytes: %v", len(got), err)
	}
	h, hl, err := proxyproto.Parse(got)
	if err != nil || h.Source != netip.MustParseAddrPort("192.0.2.6:40006") {
		t.Fatalf("the replay's PROXY header: %+v, %v", h, err)
	}
	sameBytes(t, "the replay after the header", got[hl:], want)
	replaying.Close()
	nu.waitMetric(3, "protoplex_connections_closed_total", "protocol=ECHO", "reason=done")
	nu.idle()
	if n := strings.Count(old.log.String(), "connection closed"); n != 0 {
		t.Errorf("the old plane logged %d closes:\n%s", n, old.log)
	}
}

// slowListener is a loopback listener whose accept queue is full
// (backlog 0, filled by the test's own connections, whose addresses it
// returns): a connect to it stalls, its SYNs dropped, until the test
// accepts the queued ones; the kernel's next SYN then gets through.
func slowListener(t *testing.T) (net.Listener, map[string]bool) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "slow")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	fillers := map[string]bool{}
	for range 16 {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 200*time.Millisecond)
		if err != nil {
			return ln, fillers
		}
		t.Cleanup(func() { c.Close() })
		fillers[c.LocalAddr().String()] = true
	}
	t.Fatalf("connects to %s still complete with its accept queue full", ln.Addr())
	return nil, nil
}

// TestMoveDialingDoneWhileOut: an off-loop dial that completes while its
// connection's batch is out (its outcome waits for the batch's fate) goes
// on when the batch is restored: the connection is served in the old
// process, through the socket that dial got. One that moves instead
// closes that socket, and the new process dials its own.
func TestMoveDialingDoneWhileOut(t *testing.T) {
	for _, how := range []string{"restored", "moved"} {
		t.Run(how, func(t *testing.T) {
			ln, fillers := slowListener(t)
			offLoop := route("ECHO", ln.Addr().String())
			offLoop.Source = []string{"127.0.0.1"} // dialed on a goroutine
			old := newRig(t, []*protocols.Protocol{offLoop}, func(s *setup) { s.srv.DialTimeout = time.Minute })
			nu := newRig(t, []*protocols.Protocol{route("ECHO", testnet.Echo(t))})
			c := old.dial()
			if _, err := c.Write([]byte("HELLO out\n")); err != nil {
				t.Fatal(err)
			}
			inState(t, old, "dialing")
			batch := old.plane.Detach(handover.MaxFDsPerMessage)
			if batch == nil || batch.Len() != 1 {
				t.Fatalf("detached %+v", batch)
			}
			// The backend comes up: the queued connections are taken, the
			// dial's next SYN gets through, and the dial completes.
			var be net.Conn
			for be == nil {
				bc, err := ln.Accept()
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { bc.Close() })
				if !fillers[bc.RemoteAddr().String()] {
					be = bc
				}
			}
			_ = be.SetDeadline(time.Now().Add(bound))
			switch how {
			case "restored":
				old.plane.Restore(batch)
				buf := make([]byte, len("HELLO out\n"))
				if _, err := io.ReadFull(be, buf); err != nil || string(buf) != "HELLO out\n" {
					t.Fatalf("the backend read %q, %v; log:\n%s", buf, err, old.log)
				}
				be.Write(buf)
				if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "HELLO out\n" {
					t.Fatalf("the client read %q, %v", buf, err)
				}
				c.Close()
				be.Close()
				old.waitMetric(1, "protoplex_connections_closed_total", "protocol=ECHO", "reason=done")
			case "moved":
				if n, _ := moveFrom(t, old.plane, nu.plane, batch); n != 1 {
					t.Fatalf("moved %d", n)
				}
				if got, err := readAll(be); err != nil || len(got) != 0 {
					t.Errorf("the abandoned dial's socket carried %q, and was not closed: %v", got, err)
				}
				buf := make([]byte, len("HELLO out\n"))
				if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "HELLO out\n" {
					t.Fatalf("after the move: %q, %v; log:\n%s", buf, err, nu.log)
				}
				c.Close()
				nu.waitMetric(1, "protoplex_connections_closed_total", "protocol=ECHO", "reason=done")
			}
			old.idle()
		})
	}
}
