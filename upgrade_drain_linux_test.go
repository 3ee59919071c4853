package protoplex

import (
	"bufio"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/handover"
	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/protocols"
)

// TestMoveLeavesHandlersToDrain: an upgrade moves the event loops'
// forwarded pairs, never a connection an in-process handler serves:
// MoveConnections counts that one as left (what the CLI logs as
// left_to_drain and, as the old process exits, drained), the new manager
// counts it in protoplex_upgrade_connections_left_total, and it goes on in
// the old manager, whose drain ends when it does, not before.
func TestMoveLeavesHandlersToDrain(t *testing.T) {
	backend := testnet.Banner(t, "A:")
	echoLines := func(c net.Conn) { // a Redis-speaking handler: each line back
		defer c.Close()
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			io.WriteString(c, "+"+line)
		}
	}
	manager := func(handler bool) (*ProtocolManager, string, context.CancelFunc) {
		pm := NewProtocolManager(WithLogger(discardLogger()), WithGracefulShutdownTimeout(20*time.Second))
		pm.AddProtocol(protocols.NewSSHProtocol(backend))
		if handler {
			pm.AddProtocol(CreateInternalProtocol(protocols.NewRedisProtocol, echoLines))
		}
		ctx, cancel := context.WithCancel(context.Background())
		if err := pm.Start(ctx, "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cancel(); pm.Wait(); pm.Close() })
		return pm, pm.Addrs()[0].String(), cancel
	}
	old, addr, stopOld := manager(true)
	if old.settings.Load().DataPlane == "goroutines" {
		t.Skip("the goroutine data plane moves nothing")
	}
	next, _, _ := manager(false)

	dial := func(first string) (net.Conn, *bufio.Reader) {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		io.WriteString(c, first)
		return c, bufio.NewReader(c)
	}
	ask := func(c net.Conn, r *bufio.Reader, line, want string) {
		t.Helper()
		io.WriteString(c, line)
		if got, err := r.ReadString('\n'); err != nil || got != want {
			t.Fatalf("sent %q: got %q, %v; want %q", line, got, err, want)
		}
	}
	fwd, fwdR := dial("SSH-2.0-x\r\n")
	if got, _ := fwdR.ReadString('\n'); got != "A:SSH-2.0-x\r\n" {
		t.Fatalf("forwarded: %q", got)
	}
	inproc, inprocR := dial("*1\r\n$4\r\nPING\r\n")
	for _, want := range []string{"+*1\r\n", "+$4\r\n", "+PING\r\n"} {
		if got, _ := inprocR.ReadString('\n'); got != want {
			t.Fatalf("in-process: %q, want %q", got, want)
		}
	}

	limits := handover.Limits{Timeout: 10 * time.Second, MaxTotalFDs: 1 << 16}
	conn, peer, err := handover.Pair(limits)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pconn, err := handover.FileConn(peer, limits)
	if err != nil {
		t.Fatal(err)
	}
	defer pconn.Close()
	type result struct{ moved, left int }
	adopted := make(chan result, 1)
	go func() {
		moved, left, _ := next.AdoptConnections(pconn, time.Now())
		adopted <- result{moved, left}
	}()
	mv, err := old.MoveConnections(conn)
	if err != nil || mv.Conns != 1 || mv.ConnsLeft != 1 {
		t.Fatalf("MoveConnections: moved %d, left %d, %v; want the forwarded pair moved and the handler's connection left", mv.Conns, mv.ConnsLeft, err)
	}
	if got := <-adopted; got != (result{1, 1}) {
		t.Errorf("AdoptConnections: %+v, want 1 moved, 1 left in the old manager", got)
	}
	if v := scrape(t, next)["protoplex_upgrade_connections_left_total"]; v != 1 {
		t.Errorf("protoplex_upgrade_connections_left_total = %v in the new manager, want 1", v)
	}

	// The old manager drains: the handler's connection goes on there, the
	// moved pair in the new one, and the drain ends with the handler.
	stopOld()
	drained := make(chan struct{})
	go func() { old.Wait(); close(drained) }()
	ask(inproc, inprocR, "after\r\n", "+after\r\n")
	ask(fwd, fwdR, "SSH-2.0-moved\r\n", "SSH-2.0-moved\r\n")
	select {
	case <-drained:
		t.Fatal("the old manager's drain ended while its handler's connection was open")
	default:
	}
	inproc.Close()
	select {
	case <-drained:
	case <-time.After(30 * time.Second):
		t.Fatal("the old manager's drain did not end after its handler's connection closed")
	}
}
