//go:build linux

package protoplex

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/handover"
	"github.com/darkit/protoplex/internal/testnet"
)

const moveBound = 10 * time.Second

// moveRig is two managers, as an old and a new process, each serving the
// SSH route to backend on the event loops, and a handover socket between
// them.
func moveRig(t *testing.T) (old, nu *ProtocolManager, a, b *handover.Conn) {
	t.Helper()
	backend := testnet.Banner(t, "A:")
	cfg, err := ParseConfig([]byte(fmt.Sprintf("server:\n  listen: [\"127.0.0.1:0\"]\n  data_plane: events\nprotocols:\n  - name: SSH\n    target: %q\n", backend)), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	start := func() *ProtocolManager {
		pm := NewProtocolManager(WithLogger(discardLogger()), WithGracefulShutdownTimeout(moveBound))
		if err := pm.UpdateConfig(cfg); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		if err := pm.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cancel(); pm.Wait(); pm.Close() })
		return pm
	}
	old, nu = start(), start()
	a, peer, err := handover.Pair(handover.Limits{Timeout: moveBound})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, err = handover.FileConn(peer, handover.Limits{Timeout: moveBound})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return old, nu, a, b
}

// forwarding opens a connection through pm and waits for its first
// answer: the pair forwards.
func forwarding(t *testing.T, pm *ProtocolManager) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", pm.Addrs()[0].String(), moveBound)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(moveBound))
	r := bufio.NewReader(c)
	io.WriteString(c, "SSH-2.0-x\r\n")
	if line, err := r.ReadString('\n'); err != nil || line != "A:SSH-2.0-x\r\n" {
		t.Fatalf("through the old manager: %q, %v", line, err)
	}
	return c, r
}

// answers checks that c's pair still forwards.
func answers(t *testing.T, c net.Conn, r *bufio.Reader, what string) {
	t.Helper()
	io.WriteString(c, "SSH-2.0-"+what+"\r\n")
	if line, err := r.ReadString('\n'); err != nil || line != "SSH-2.0-"+what+"\r\n" {
		t.Fatalf("%s: %q, %v", what, line, err)
	}
}

type adopted struct {
	moved, left int
	err         error
}

func adoptAsync(pm *ProtocolManager, b *handover.Conn) <-chan adopted {
	ch := make(chan adopted, 1)
	go func() {
		m, l, err := pm.AdoptConnections(b, time.Now())
		ch <- adopted{m, l, err}
	}()
	return ch
}

func waitAdopted(t *testing.T, ch <-chan adopted) adopted {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(moveBound):
		t.Fatal("AdoptConnections does not return")
	}
	return adopted{}
}

// TestMoveConnectionsCommit: a forwarded pair moves through
// MoveConnections and AdoptConnections and goes on in the new manager;
// the old one holds nothing after.
func TestMoveConnectionsCommit(t *testing.T) {
	old, nu, a, b := moveRig(t)
	c, r := forwarding(t, old)
	ch := adoptAsync(nu, b)
	mv, err := old.MoveConnections(a)
	if err != nil || mv.Conns != 1 || mv.ConnsLeft != 0 {
		t.Fatalf("MoveConnections: %+v: %v", mv, err)
	}
	if got := waitAdopted(t, ch); got != (adopted{1, 0, nil}) {
		t.Fatalf("AdoptConnections: %+v", got)
	}
	answers(t, c, r, "moved")
	if n := old.conns.Len(); n != 0 {
		t.Errorf("the old manager still tracks %d connections", n)
	}
	if n := len(nu.loops.Plane().Connections(10)); n != 1 {
		t.Errorf("the new manager's loops hold %d connections", n)
	}
}

// TestMoveBatchGivenUp: a batch the old process gave up on (the new
// one's answer came after its wait: it took the batch back and ended the
// phase) is never adopted by the new process, however ready it was: only
// the old one reads the connection. Before the commit step, the new
// process adopted each batch as it came, and both read the same sockets.
func TestMoveBatchGivenUp(t *testing.T) {
	old, nu, a, b := moveRig(t)
	c, r := forwarding(t, old)
	p := old.loops.Plane()
	batch := p.Detach(handover.MaxFDsPerMessage)
	if batch == nil || batch.Len() != 1 {
		t.Fatalf("detached %+v", batch)
	}
	if err := a.Send(batch.Msg, batch.FDs); err != nil {
		p.Restore(batch)
		t.Fatal(err)
	}
	ch := adoptAsync(nu, b)
	ready, _, err := a.Recv()
	// The old process's wait ended here: it keeps the batch, and says so.
	p.Restore(batch)
	if err != nil || ready.Kind != handover.Ack || ready.Count != 1 {
		t.Fatalf("the new manager's answer: %+v, %v", ready, err)
	}
	if err := a.Send(handover.Message{Kind: handover.Done, Count: 1}, nil); err != nil {
		t.Fatal(err)
	}
	if got := waitAdopted(t, ch); got != (adopted{0, 1, nil}) {
		t.Fatalf("AdoptConnections: %+v, want none moved and one left in the old process", got)
	}
	if st := nu.loops.Plane().Connections(10); len(st) != 0 {
		t.Errorf("the new manager's loops hold %+v", st)
	}
	answers(t, c, r, "stayed")
	if n := old.conns.Len(); n != 1 {
		t.Errorf("the old manager tracks %d connections, want 1", n)
	}
}
