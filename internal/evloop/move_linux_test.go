//go:build linux

package evloop_test

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/evloop"
	"github.com/darkit/protoplex/internal/handover"
	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/protocols"
)

// move sends what old's loops detach to new, as an upgrade does over its
// socketpair, until nothing is left to move; it returns how many moved,
// and how many descriptors went with them.
func move(t *testing.T, old, new *evloop.Plane) (moved, fds int) {
	t.Helper()
	return moveFrom(t, old, new, nil)
}

// moveFrom is move, sending first (detached already) first.
func moveFrom(t *testing.T, old, new *evloop.Plane, first *evloop.Batch) (moved, fds int) {
	t.Helper()
	a, b := handoverPair(t)
	defer a.Close()
	defer b.Close()
	for {
		batch := first
		first = nil
		if batch == nil {
			batch = old.Detach(handover.MaxFDsPerMessage)
		}
		if batch == nil {
			return moved, fds
		}
		fds += len(batch.FDs)
		if err := a.Send(batch.Msg, batch.FDs); err != nil {
			old.Restore(batch)
			t.Fatal(err)
		}
		m, files, err := b.Recv()
		if err != nil {
			old.Restore(batch)
			t.Fatal(err)
		}
		prep, err := new.Prepare(m, files)
		if err != nil || prep.Len() != batch.Len() {
			old.Restore(batch)
			t.Fatalf("prepared %v of %d: %v", prep, batch.Len(), err)
		}
		if err := prep.Hold(); err != nil { // on the commit
			old.Restore(batch)
			t.Fatalf("holding %d: %v", batch.Len(), err)
		}
		old.Moved(batch) // on the new plane's word (Adopted), before it reads
		n := prep.Start()
		if n != batch.Len() {
			t.Fatalf("started %d of %d", n, batch.Len())
		}
		moved += n
	}
}

// handoverPair is the two ends of a new handover socket, each waiting
// at most bound; the caller closes them.
func handoverPair(t testing.TB) (old, next *handover.Conn) {
	t.Helper()
	old, peer, err := handover.Pair(handover.Limits{Timeout: bound})
	if err != nil {
		t.Fatal(err)
	}
	next, err = handover.FileConn(peer, handover.Limits{Timeout: bound})
	if err != nil {
		old.Close()
		t.Fatal(err)
	}
	return old, next
}

// TestMoveConnections: forwarded pairs move from one plane to another —
// idle ones, and one whose backend → client direction holds megabytes in
// a splice pipe the client has not read — and go on byte for byte there.
// The old plane logs and counts none of them as closed; the new one
// counts each once, with the bytes moved before the move included, and
// writes its access line.
func TestMoveConnections(t *testing.T) {
	echo := testnet.Echo(t)
	protos := func() []*protocols.Protocol { return []*protocols.Protocol{route("ECHO", echo)} }
	old := newRig(t, protos(), func(s *setup) { s.env.SpliceAfter = 1 })
	nu := newRig(t, protos(), func(s *setup) { s.env.SpliceAfter = 1 })

	const idle = 40
	conns := make([]net.Conn, idle)
	for i := range conns {
		conns[i] = old.echoed()
	}
	// The bulk one: the client writes 6 MiB and reads nothing until the
	// move, so the echo piles up in the pipe and the sockets.
	bulk := old.dial()
	_ = bulk.SetReadBuffer(16 << 10) // what it does not read piles up in the plane
	want := payload(6 << 20)
	wrote := make(chan error, 1)
	go func() {
		_, err := bulk.Write(want)
		if err == nil {
			err = bulk.CloseWrite()
		}
		wrote <- err
	}()
	testnet.Eventually(t, bound, func() bool {
		for _, ci := range old.plane.Connections(100) {
			if ci.Up > 1<<20 {
				return true
			}
		}
		return false
	}, "the bulk connection never moved a megabyte up")
	// Until the echo piles up: the batch that moves first holds a pipe
	// with bytes in it.
	var first *evloop.Batch
	testnet.Eventually(t, bound, func() bool {
		b := old.plane.Detach(handover.MaxFDsPerMessage)
		if b != nil && len(b.FDs) > 2*b.Len() {
			first = b
			return true
		}
		if b != nil {
			old.plane.Restore(b)
		}
		return false
	}, "the bulk connection holds no bytes for its client")

	n, fds := moveFrom(t, old.plane, nu.plane, first)
	if n != idle+1 {
		t.Fatalf("moved %d connections, want %d", n, idle+1)
	}
	if fds <= 2*n {
		t.Fatalf("%d descriptors for %d connections: the bulk one moved no pipe", fds, n)
	}
	old.idle()
	if got := len(nu.plane.Connections(1000)); got != idle+1 {
		t.Fatalf("the new plane lists %d connections", got)
	}
	got, err := io.ReadAll(bulk)
	if err != nil {
		t.Fatalf("reading the bulk echo after %d bytes: %v; log:\n%s", len(got), err, nu.log)
	}
	sameBytes(t, "bulk echo across the move", got, want)
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	for i, c := range conns {
		msg := fmt.Sprintf("still here %d\n", i)
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
			t.Fatalf("conn %d after the move: %q, %v", i, buf, err)
		}
		c.Close()
	}
	nu.waitMetric(idle+1, "protoplex_connections_closed_total", "protocol=ECHO", "reason=done")
	nu.idle()
	if n := old.metric("protoplex_connections_closed_total", "protocol=ECHO", "reason=done"); n != 0 {
		t.Errorf("the old plane counted %v closes", n)
	}
	if n := strings.Count(old.log.String(), "connection closed"); n != 0 {
		t.Errorf("the old plane logged %d closes:\n%s", n, old.log)
	}
	if n := strings.Count(nu.log.String(), "connection closed"); n != idle+1 {
		t.Errorf("the new plane logged %d closes, want %d", n, idle+1)
	}
	up := nu.metric("protoplex_forwarded_bytes_total", "protocol=ECHO", "direction=client_to_backend")
	if min := float64(len(want) + idle*6); up < min {
		t.Errorf("forwarded up = %v, want at least %v (the bytes before the move included)", up, min)
	}
}

// TestMoveRestored: a batch that did not move (the new process refused or
// died) goes on in the old plane; one a drain aborted meanwhile ends
// there, counted as aborted.
func TestMoveRestored(t *testing.T) {
	echo := testnet.Echo(t)
	r := newRig(t, []*protocols.Protocol{route("ECHO", echo)})
	c := r.echoed()
	batch := r.plane.Detach(handover.MaxFDsPerMessage)
	if batch == nil || batch.Len() != 1 {
		t.Fatalf("detached %v", batch)
	}
	if st := r.plane.Connections(10); len(st) != 1 || st[0].State != "moving" {
		t.Fatalf("while moving: %+v", st)
	}
	if again := r.plane.Detach(handover.MaxFDsPerMessage); again != nil {
		t.Fatalf("a moving connection detached twice: %d", again.Len())
	}
	r.plane.Restore(batch)
	if _, err := c.Write([]byte("again\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "again\n" {
		t.Fatalf("after the restore: %q, %v", buf, err)
	}

	batch = r.plane.Detach(handover.MaxFDsPerMessage)
	r.conns.CloseAll() // a drain's deadline, while the batch is out
	r.plane.Restore(batch)
	r.waitMetric(1, "protoplex_connections_closed_total", "protocol=ECHO", "reason=drain")
	r.idle()
	if got, _ := readAll(c); len(got) != 0 {
		t.Errorf("read %q after the abort", got)
	}
}

// TestAdoptRefusesBadMessage: a message out of its layout (a client
// without its backend) is refused whole, its descriptors closed, and
// nothing is adopted.
func TestAdoptRefusesBadMessage(t *testing.T) {
	r := newRig(t, []*protocols.Protocol{route("ECHO", testnet.Echo(t))})
	c := r.dial()
	a, b := handoverPair(t)
	defer a.Close()
	defer b.Close()
	f, err := c.File()
	if err != nil {
		t.Fatal(err)
	}
	meta, _ := handover.EncodeConn(nil, handover.ConnState{Protocol: "ECHO", Route: "ECHO"})
	m := handover.Message{Kind: handover.Conns, Records: []handover.Record{{Type: handover.TCPConn, Name: "client", Meta: meta}}}
	err = a.Send(m, []int{int(f.Fd())})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	got, files, err := b.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if prep, err := r.plane.Prepare(got, files); err == nil {
		prep.Discard()
		t.Fatalf("prepared %d", prep.Len())
	}
	for i, f := range files {
		if f.Fd() != ^uintptr(0) {
			t.Errorf("descriptor %d still open after the refusal", i)
		}
	}
	if n := len(r.plane.Connections(10)); n > 1 { // at most the test's own client, not yet identified
		t.Errorf("%d connections listed: one adopted", n)
	}
}

// TestMoveRouteGone: the new process's configuration no longer has the
// moved connection's route: it still completes there, and is counted and
// logged under the route it had.
func TestMoveRouteGone(t *testing.T) {
	echo := testnet.Echo(t)
	old := newRig(t, []*protocols.Protocol{route("ECHO", echo)})
	nu := newRig(t, []*protocols.Protocol{routeFor("OTHER", "OTHER", testnet.Echo(t))})
	c := old.echoed()
	if n, _ := move(t, old.plane, nu.plane); n != 1 {
		t.Fatalf("moved %d", n)
	}
	if _, err := c.Write([]byte("on\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "on\n" {
		t.Fatalf("after the move: %q, %v", buf, err)
	}
	c.Close()
	nu.waitMetric(1, "protoplex_connections_closed_total", "protocol=ECHO", "reason=done")
	nu.idle()
	if !strings.Contains(nu.log.String(), "route=ECHO target="+echo+" up=9 down=9") {
		t.Errorf("the access line does not carry the route, target and bytes:\n%s", nu.log)
	}
}

// identifying dials r and sends the first bytes of a first flight, then
// waits until the plane lists the connection as identifying.
func identifying(t *testing.T, r *rig, first string) net.Conn {
	t.Helper()
	c := r.dial()
	if _, err := c.Write([]byte(first)); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, bound, func() bool {
		st := r.plane.Connections(10)
		return len(st) == 1 && st[0].State == "identifying" && st[0].Up == 0
	}, "the connection is not identifying: %v", testnet.Later(func() string { return fmt.Sprint(r.plane.Connections(10)) }))
	return c
}

// TestMoveIdentifying: a connection that has sent part of its first
// flight moves with those bytes; the new process identifies it once the
// rest comes and forwards all of it. One that does not move (restored)
// goes on in the old process the same way.
func TestMoveIdentifying(t *testing.T) {
	echo := testnet.Echo(t)
	protos := func() []*protocols.Protocol { return []*protocols.Protocol{route("ECHO", echo)} }
	old := newRig(t, protos())
	nu := newRig(t, protos())

	c := identifying(t, old, "HEL")
	if n, fds := move(t, old.plane, nu.plane); n != 1 || fds != 3 {
		t.Fatalf("moved %d connections with %d descriptors, want 1 with 3 (the client, a pipe with its bytes)", n, fds)
	}
	old.idle()
	if _, err := c.Write([]byte("LO moved\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len("HELLO moved\n"))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "HELLO moved\n" {
		t.Fatalf("after the move: %q, %v; log:\n%s", buf, err, nu.log)
	}
	c.Close()
	nu.waitMetric(1, "protoplex_connections_closed_total", "protocol=ECHO", "reason=done")
	if n := strings.Count(old.log.String(), "connection closed"); n != 0 {
		t.Errorf("the old plane logged %d closes:\n%s", n, old.log)
	}

	c = identifying(t, old, "HEL")
	batch := old.plane.Detach(handover.MaxFDsPerMessage)
	if batch == nil || len(batch.FDs) != 3 {
		t.Fatalf("detached %+v", batch)
	}
	old.plane.Restore(batch)
	if _, err := c.Write([]byte("LO stayed\n")); err != nil {
		t.Fatal(err)
	}
	buf = make([]byte, len("HELLO stayed\n"))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "HELLO stayed\n" {
		t.Fatalf("after the restore: %q, %v; log:\n%s", buf, err, old.log)
	}
	c.Close()
	old.waitMetric(1, "protoplex_connections_closed_total", "protocol=ECHO", "reason=done")

	// Aborted while its batch was out: it ends as unidentified.
	c = identifying(t, old, "HEL")
	batch = old.plane.Detach(handover.MaxFDsPerMessage)
	old.conns.CloseAll()
	old.plane.Restore(batch)
	old.idle()
	if got, _ := readAll(c); len(got) != 0 {
		t.Errorf("read %q after the abort", got)
	}
}

// TestMoveConnecting: a connection whose backend connect hangs moves with
// the bytes it sent, nothing of them sent to a backend yet: the new
// process identifies it again and dials its own target for the route. One
// restored goes on connecting in the old process, and fails there when
// its dial times out, counted as a dial error.
func TestMoveConnecting(t *testing.T) {
	stuck := stuckAddr(t)
	old := newRig(t, []*protocols.Protocol{route("ECHO", stuck)}, func(s *setup) { s.srv.DialTimeout = 2 * time.Second })
	nu := newRig(t, []*protocols.Protocol{route("ECHO", testnet.Echo(t))})
	connecting := func() net.Conn {
		c := old.dial()
		if _, err := c.Write([]byte("HELLO dial\n")); err != nil {
			t.Fatal(err)
		}
		testnet.Eventually(t, bound, func() bool {
			st := old.plane.Connections(10)
			return len(st) == 1 && st[0].State == "connecting"
		}, "the connection is not connecting: %v", testnet.Later(func() string { return fmt.Sprint(old.plane.Connections(10)) }))
		return c
	}
	c := connecting()
	if n, fds := move(t, old.plane, nu.plane); n != 1 || fds != 3 {
		t.Fatalf("moved %d connections with %d descriptors, want 1 with 3 (the client, a pipe with its bytes)", n, fds)
	}
	old.idle()
	buf := make([]byte, len("HELLO dial\n"))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "HELLO dial\n" {
		t.Fatalf("after the move: %q, %v; log:\n%s", buf, err, nu.log)
	}
	c.Close()
	nu.waitMetric(1, "protoplex_connections_closed_total", "protocol=ECHO", "reason=done")
	if n := strings.Count(old.log.String(), "connection closed"); n != 0 {
		t.Errorf("the old plane logged %d closes:\n%s", n, old.log)
	}

	c = connecting()
	batch := old.plane.Detach(handover.MaxFDsPerMessage)
	if batch == nil || batch.Len() != 1 {
		t.Fatalf("detached %+v", batch)
	}
	old.plane.Restore(batch)
	if got, _ := readAll(c); len(got) != 0 {
		t.Errorf("read %q from a connection whose dial failed", got)
	}
	old.waitMetric(1, "protoplex_connections_closed_total", "protocol=ECHO", "reason=dial_error")
	old.idle()
}
