//go:build linux

package evloop_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/handover"
	"github.com/darkit/protoplex/internal/listen"
	"github.com/darkit/protoplex/internal/routing"
	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/internal/udp"
	"github.com/darkit/protoplex/internal/udp/udptest"
	"github.com/darkit/protoplex/protocols"
)

// moveSide is one process of a UDP flow move: an engine on a rig's loops.
type moveSide struct {
	r     *rig
	e     *udp.Engine
	serve func() // starts serving, once; udpEngine calls it unless lazy
}

// udpEngine starts an engine on r's loops serving pc (its sockets, or a
// group handed over), held unread first when hold is set.
func udpEngine(t testing.TB, r *rig, pc net.PacketConn, hold, lazy bool, opts ...func(*udp.Options)) *moveSide {
	t.Helper()
	log := slog.New(slog.NewTextHandler(r.log, nil))
	uo := udp.ForManager(context.Background(), func() *routing.Table { return r.table }, func() udp.Settings { return udp.Settings{AccessLog: true} }, nil, r.stats.UDP, log)
	uo.Loops = func() ([]udp.Loop, func()) { return r.plane.UDPLoops(), nil }
	uo.Sockets = 2
	for _, o := range opts {
		o(&uo)
	}
	e := udp.New(uo)
	if hold {
		e.Hold()
	}
	served := make(chan error, 1)
	var once sync.Once
	serve := func() { once.Do(func() { go func() { served <- e.Serve(context.Background(), pc) }() }) }
	t.Cleanup(func() {
		serve() // Serve closes pc
		e.Close()
		if err := waitFor(served); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	if !lazy {
		serve()
	}
	return &moveSide{r: r, e: e, serve: serve}
}

// handedOver duplicates every socket of pc, in order, as an upgrade hands
// them to the new process: one group.
func handedOver(t testing.TB, pc net.PacketConn) net.PacketConn {
	t.Helper()
	g := &listen.PacketGroup{}
	for i, s := range udp.Sockets(pc) {
		f, err := s.(*net.UDPConn).File()
		if err != nil {
			t.Fatal(err)
		}
		dup, err := net.FilePacketConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			g.PacketConn = dup
		} else {
			g.Others = append(g.Others, dup)
		}
	}
	return g
}

// movePair is two rigs serving protos, the old engine serving the sockets
// of a new loopback address (addr) and the new engine, held unread, their
// handed-over copies; with lazy the new one starts serving only when the
// first flows come (moveFlows).
func movePair(t *testing.T, protos []*protocols.Protocol, lazy bool) (ro, rn *rig, old, next *moveSide, addr *net.UDPAddr) {
	t.Helper()
	return movePairOf(t, protos, lazy, nil, nil)
}

// movePairWith is movePair, each engine's options set by its function.
func movePairWith(t *testing.T, protos []*protocols.Protocol, oldOpts, newOpts func(*udp.Options)) (ro, rn *rig, old, next *moveSide, addr *net.UDPAddr) {
	t.Helper()
	return movePairOf(t, protos, false, oldOpts, newOpts)
}

func movePairOf(t *testing.T, protos []*protocols.Protocol, lazy bool, oldOpts, newOpts func(*udp.Options)) (ro, rn *rig, old, next *moveSide, addr *net.UDPAddr) {
	t.Helper()
	ro, rn = newRig(t, protos), newRig(t, protos)
	pc, err := udp.New(udp.Options{Sockets: 2}).BindSockets(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts := func(f func(*udp.Options)) []func(*udp.Options) {
		if f == nil {
			return nil
		}
		return []func(*udp.Options){f}
	}
	next = udpEngine(t, rn, handedOver(t, pc), true, lazy, opts(newOpts)...)
	old = udpEngine(t, ro, pc, false, false, opts(oldOpts)...)
	return ro, rn, old, next, pc.LocalAddr().(*net.UDPAddr)
}

// How the new side of moveFlows answers.
type adoptMode int

const (
	adoptAll    adoptMode = iota
	refuseAll             // a new process that is alive and says no
	dieFirst              // a new process that dies at the first batch
	dieAtCommit           // one that dies once the first batch is committed, before it adopts it
)

// moveFlows runs both ends of the flow phase over a real handover
// socketpair, as the manager does (moveFlows, adoptFlows): the old side
// stops reading, sends its flows in batches and ends the phase; the new
// one adopts each batch, refuses them, or goes away, and reads its
// listeners once the phase ends. during runs once the old side stopped
// reading and before anything moved. It returns how many flows moved.
func moveFlows(t testing.TB, old, next *moveSide, mode adoptMode, during func()) int {
	t.Helper()
	oc, peer, err := handover.Pair(handover.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	nc, err := handover.FileConn(peer, handover.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	adopted := make(chan error, 1)
	go func() {
		defer nc.Close()
		for {
			m, files, err := nc.Recv()
			if err != nil {
				adopted <- err
				return
			}
			if m.Kind == handover.Done {
				if mode == refuseAll {
					next.e.Release()
				}
				adopted <- nil
				return
			}
			if len(m.Records) == 0 {
				next.e.Release()
				next.e.ResumeListeners() // one paused before (BenchmarkUDPFlowsMove)
				adopted <- nil
				return
			}
			reply := handover.Message{Kind: handover.Refuse, Note: "refused by the test"}
			switch mode {
			case dieFirst:
				for _, f := range files {
					f.Close()
				}
				adopted <- nil
				return
			case refuseAll:
				for _, f := range files {
					f.Close()
				}
			default:
				// Checked whole, then taken on the old side's commit.
				next.serve() // if it was lazy: the listener starts while the flows are checked
				prep, err := next.e.PrepareFlows(m, files)
				if err != nil {
					adopted <- err
					return
				}
				if err := nc.Send(handover.Message{Kind: handover.Ack, Count: uint32(prep.Len())}, nil); err != nil {
					adopted <- err
					return
				}
				if commit, _, err := nc.Recv(); err != nil || commit.Kind != handover.Ack {
					prep.Discard()
					adopted <- fmt.Errorf("no commit: %v %v", commit.Kind, err)
					return
				}
				if mode == dieAtCommit {
					prep.Discard() // its copies close with the process
					adopted <- nil
					return
				}
				if err := prep.Hold(); err != nil {
					adopted <- err
					return
				}
				if err := nc.Send(handover.Message{Kind: handover.Adopted, Count: uint32(prep.Len())}, nil); err != nil {
					prep.Discard()
					adopted <- err
					return
				}
				prep.Start()
				continue
			}
			if err := nc.Send(reply, nil); err != nil {
				adopted <- err
				return
			}
		}
	}()
	old.e.PauseListeners()
	during()
	moved := 0
	var failed error
	refused := false
	for failed == nil {
		b := old.e.DetachFlows(handover.MaxFDsPerMessage)
		if b == nil {
			break
		}
		if err := oc.Send(b.Msg, b.FDs); err != nil {
			t.Fatal(err)
		}
		ack, _, err := oc.Recv()
		switch {
		case err != nil:
			failed = err
		case ack.Kind != handover.Ack:
			failed, refused = errors.New(ack.Note), true
		default:
			failed = oc.Send(handover.Message{Kind: handover.Ack, Count: ack.Count}, nil) // the commit
			if failed == nil {
				// Its copies stay until the new side's word that it adopted
				// the batch.
				if word, _, err := oc.Recv(); err != nil || word.Kind != handover.Adopted {
					failed = fmt.Errorf("no adoption: %v %v", word.Kind, err)
				}
			}
		}
		if failed != nil {
			old.e.RestoreFlows(b)
			break
		}
		old.e.MovedFlows(b)
		moved += b.Len()
	}
	if failed == nil {
		failed = oc.Send(handover.Message{Kind: handover.Flows, Count: uint32(old.e.Flows())}, nil)
	} else {
		// Done ends the handover; the new side goes, holding its
		// listeners after a death, reading them after a refusal.
		_ = oc.Send(handover.Message{Kind: handover.Done}, nil)
	}
	if failed != nil && !refused {
		old.e.ResumeListeners()
	}
	if err := waitFor(adopted); err != nil {
		t.Fatalf("adopting: %v", err)
	}
	if (mode != adoptAll) != (failed != nil) {
		t.Fatalf("mode %d, the move failed with %v", mode, failed)
	}
	return moved
}

// flowClients starts n flows of "PING" clients through addr, each
// answered by the tagged echo (which prefixes every reply with the flow's
// first datagram as it saw it from that source port).
func flowClients(t testing.TB, r *rig, addr *net.UDPAddr, n int) []*net.UDPConn {
	t.Helper()
	cs := make([]*net.UDPConn, n)
	for i := range cs {
		c, err := net.DialUDP("udp", nil, addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cs[i] = c
		if got, want := roundTrip(t, r, c, fmt.Sprintf("PING%d", i)), fmt.Sprintf("PING%d|PING%d", i, i); got != want {
			t.Fatalf("flow %d: %q, want %q", i, got, want)
		}
	}
	return cs
}

func roundTrip(t testing.TB, r *rig, c *net.UDPConn, msg string) string {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	return r.readUDP(c)
}

// TestUDPFlowsMove: flows move from one engine to another through a real
// handover socketpair with their upstream sockets: the backend sees every
// flow's source port unchanged (the tagged echo keeps its first datagram
// per source port), a datagram sent while the old engine no longer reads
// and the new one not yet is answered once, by the new one, and a flow
// still identifying finishes there. The old engine ends with no flow and
// counts none as ended; the new one counts them all as active.
func TestUDPFlowsMove(t *testing.T) {
	echo := udptest.Echo(t, true)
	protos := []*protocols.Protocol{
		{Name: "UECHO", Target: echo, Datagram: datagramPrefix("PING")},
		{Name: "UTWO", Target: echo, Datagram: twoDatagrams},
	}
	// The new engine starts serving only once the first flows come: its
	// manager starts each address in a goroutine, and adoption waits for
	// the listener.
	ro, rn, old, next, addr := movePair(t, protos, true)
	const n = 40
	cs := flowClients(t, ro, addr, n)
	ident, err := net.DialUDP("udp", nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ident.Close()
	if _, err := ident.Write([]byte("A")); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, bound, func() bool { return old.e.Flows() == n+1 }, "the identifying flow in the old engine")

	moved := moveFlows(t, old, next, adoptAll, func() {
		for i, c := range cs {
			if _, err := c.Write(fmt.Appendf(nil, "PING%d-during", i)); err != nil {
				t.Fatal(err)
			}
		}
	})
	if moved != n+1 {
		t.Fatalf("%d flows moved, want %d", moved, n+1)
	}
	for i, c := range cs {
		if got, want := ro.readUDP(c), fmt.Sprintf("PING%d|PING%d-during", i, i); got != want {
			t.Fatalf("flow %d, sent during the switch: %q, want %q", i, got, want)
		}
		// The next answer is the next datagram's: the one sent during the
		// switch came back once.
		if got, want := roundTrip(t, rn, c, fmt.Sprintf("PING%d-after", i)), fmt.Sprintf("PING%d|PING%d-after", i, i); got != want {
			t.Fatalf("flow %d after the move: %q, want %q", i, got, want)
		}
	}
	// Routed here once its second datagram came: both go up, from one port.
	if got := roundTrip(t, rn, ident, "B1"); got != "A|A" {
		t.Fatalf("the flow moved while identifying: %q, want %q", got, "A|A")
	}
	if got := rn.readUDP(ident); got != "A|B1" {
		t.Fatalf("the flow moved while identifying: %q, want %q", got, "A|B1")
	}
	if o, nx := old.e.Flows(), next.e.Flows(); o != 0 || nx != n+1 {
		t.Errorf("flows: %d in the old engine, %d in the new, want 0 and %d", o, nx, n+1)
	}
	if got := ro.metric("protoplex_udp_flows_expired_total", "reason=idle") + ro.metric("protoplex_udp_flows_expired_total", "reason=evicted"); got != 0 {
		t.Errorf("the old engine counted %v moved flows as expired", got)
	}
	if got := ro.metric("protoplex_udp_flows_active"); got != 0 {
		t.Errorf("old: protoplex_udp_flows_active = %v, want 0", got)
	}
	if got := rn.metric("protoplex_udp_flows_active"); got != n+1 {
		t.Errorf("new: protoplex_udp_flows_active = %v, want %d", got, n+1)
	}
	// Its access line is the new engine's, with the counts from before the
	// move: 3 datagrams each way (before, during, after); the old engine
	// wrote none.
	next.e.Close()
	client := regexp.QuoteMeta(cs[0].LocalAddr().String())
	if !regexp.MustCompile(`client=` + client + ` [^\n]*datagrams_up=3 datagrams_down=3 `).MatchString(rn.log.String()) {
		t.Errorf("no access line with the counts from before the move for %s in the new engine's log:\n%s", cs[0].LocalAddr(), rn.log)
	}
	if strings.Contains(ro.log.String(), "client="+cs[0].LocalAddr().String()) {
		t.Errorf("the old engine logged a moved flow's end:\n%s", ro.log)
	}
}

// TestUDPTrainAfterMove: a stream flow's upstream socket moves with
// UDP_GRO on; the new engine reads a train from it as a train and sends
// its datagrams on one by one, not as one datagram of them all.
func TestUDPTrainAfterMove(t *testing.T) {
	backend := trainBackend(t)
	protos := []*protocols.Protocol{{Name: "UTRAIN", Target: backend.LocalAddr().String(), Datagram: datagramPrefix("T")}}
	_, _, old, next, addr := movePair(t, protos, false)
	c, err := net.DialUDP("udp", nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	up := backend.flow(t, c)
	backend.train(t, up, c) // through the old engine
	if moved := moveFlows(t, old, next, adoptAll, func() {}); moved != 1 {
		t.Fatalf("%d flows moved, want 1", moved)
	}
	backend.train(t, up, c) // through the new one, from the same socket
}

// TestUDPFlowsMoveRefused: a new process that refuses the flows leaves
// them with the old one, which puts them back as they were, uncounted
// (they drain there); the new process, which serves the listeners from
// then on, opens the clients' next flows.
func TestUDPFlowsMoveRefused(t *testing.T) {
	echo := udptest.Echo(t, true)
	protos := []*protocols.Protocol{{Name: "UECHO", Target: echo, Datagram: datagramPrefix("PING")}}
	ro, rn, old, next, addr := movePair(t, protos, false)
	const n = 20
	cs := flowClients(t, ro, addr, n)
	if moved := moveFlows(t, old, next, refuseAll, func() {}); moved != 0 {
		t.Fatalf("%d flows moved to a process that refused them", moved)
	}
	if got := old.e.Flows(); got != n {
		t.Fatalf("%d flows in the old engine after a refused move, want %d", got, n)
	}
	if got := ro.metric("protoplex_udp_flows_active"); got != n {
		t.Errorf("protoplex_udp_flows_active = %v, want %d", got, n)
	}
	for i, c := range cs {
		msg := fmt.Sprintf("PING%d-next", i)
		if got := roundTrip(t, rn, c, msg); got != msg+"|"+msg {
			t.Fatalf("flow %d after a refused move: %q, want a new flow's %q", i, got, msg+"|"+msg)
		}
	}
	if got := next.e.Flows(); got != n {
		t.Errorf("%d flows in the new engine, want %d", got, n)
	}
}

// TestUDPFlowsMoveNewProcessGone: a new process that goes away during the
// move — at the first batch, or once it was committed and before it said
// it adopted it — leaves the flows with the old one, which puts them back,
// reads its listeners again and goes on with each through the same
// upstream socket; a datagram sent meanwhile is answered by it once.
func TestUDPFlowsMoveNewProcessGone(t *testing.T) {
	for name, mode := range map[string]adoptMode{"first batch": dieFirst, "at the commit": dieAtCommit} {
		t.Run(name, func(t *testing.T) { flowsMoveNewProcessGone(t, mode) })
	}
}

func flowsMoveNewProcessGone(t *testing.T, mode adoptMode) {
	echo := udptest.Echo(t, true)
	protos := []*protocols.Protocol{{Name: "UECHO", Target: echo, Datagram: datagramPrefix("PING")}}
	// The new engine holds its copy unread, as a process that died does.
	ro, _, old, next, addr := movePair(t, protos, false)
	const n = 20
	cs := flowClients(t, ro, addr, n)
	if moved := moveFlows(t, old, next, mode, func() {
		for i, c := range cs {
			if _, err := c.Write(fmt.Appendf(nil, "PING%d-during", i)); err != nil {
				t.Fatal(err)
			}
		}
	}); moved != 0 {
		t.Fatalf("%d flows moved to a process that died", moved)
	}
	if got := old.e.Flows(); got != n {
		t.Fatalf("%d flows in the old engine after a failed move, want %d", got, n)
	}
	for i, c := range cs {
		if got, want := ro.readUDP(c), fmt.Sprintf("PING%d|PING%d-during", i, i); got != want {
			t.Fatalf("flow %d, sent during the failed move: %q, want %q", i, got, want)
		}
		if got, want := roundTrip(t, ro, c, fmt.Sprintf("PING%d-again", i)), fmt.Sprintf("PING%d|PING%d-again", i, i); got != want {
			t.Fatalf("flow %d after a failed move: %q, want %q", i, got, want)
		}
	}
	if got := old.e.Flows(); got != n {
		t.Errorf("%d flows in the old engine, want %d (none opened twice)", got, n)
	}
	if got := ro.metric("protoplex_udp_flows_active"); got != n {
		t.Errorf("protoplex_udp_flows_active = %v, want %d", got, n)
	}
}

// TestUDPPrepareFlowsHostile: a Flows message that lies — an identifying
// flow whose pipe holds less than its state says, a client that is no
// address, a descriptor short — is refused whole: no flow is taken and
// every descriptor it came with is closed.
func TestUDPPrepareFlowsHostile(t *testing.T) {
	protos := []*protocols.Protocol{{Name: "UECHO", Target: "127.0.0.1:9", Datagram: datagramPrefix("PING")}}
	rn := newRig(t, protos)
	pc, err := udp.New(udp.Options{Sockets: 1}).BindSockets(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := pc.LocalAddr().String()
	next := udpEngine(t, rn, pc, false, false)
	testnet.Eventually(t, bound, func() bool { return len(next.e.Addrs()) == 1 }, "the listener does not start")
	pipeWith := func(b string) *os.File {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, b)
		w.Close()
		return r
	}
	fds := openFDs(t)
	for name, c := range map[string]struct {
		st    handover.FlowState
		files func() []*os.File
	}{
		"a pipe shorter than said": {handover.FlowState{Listen: listen, Client: "127.0.0.1:4000", Identifying: true, Pending: []int{100}},
			func() []*os.File { return []*os.File{pipeWith("PING short")} }},
		"a client that is no address": {handover.FlowState{Listen: listen, Client: "nowhere", Identifying: true, Pending: []int{4}},
			func() []*os.File { return []*os.File{pipeWith("PING")} }},
		"a descriptor short": {handover.FlowState{Listen: listen, Client: "127.0.0.1:4001", Identifying: true, Pending: []int{4}},
			func() []*os.File { return nil }},
	} {
		m := handover.Message{Kind: handover.Flows}
		if err := handover.AppendFlow(&m, c.st); err != nil {
			t.Fatal(err)
		}
		if prep, err := next.e.PrepareFlows(m, c.files()); err == nil {
			prep.Discard()
			t.Errorf("%s: taken", name)
		}
	}
	if n := next.e.Flows(); n != 0 {
		t.Errorf("%d flows taken from lying messages", n)
	}
	if got := openFDs(t); got != fds {
		t.Errorf("%d descriptors open after the refusals, %d before", got, fds)
	}
}

// BenchmarkUDPFlowsMove: routed flows (none, then 1,000) move between two
// engines on loops of their own through a real handover socketpair, back
// and forth: each op is one whole flow phase (stop reading, detach, send,
// adopt, acknowledge, close, read again); none is the phase's own cost.
func BenchmarkUDPFlowsMove(b *testing.B) {
	for _, n := range []int{0, 1000} {
		b.Run(fmt.Sprintf("flows=%d", n), func(b *testing.B) { benchFlowsMove(b, n) })
	}
}

func benchFlowsMove(b *testing.B, n int) {
	echo := udptest.Echo(b, true)
	protos := []*protocols.Protocol{{Name: "UECHO", Target: echo, Datagram: datagramPrefix("PING")}}
	ra, rb := newRig(b, protos), newRig(b, protos)
	pc, err := udp.New(udp.Options{Sockets: 2}).BindSockets(context.Background(), "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := pc.LocalAddr().(*net.UDPAddr)
	sb := udpEngine(b, rb, handedOver(b, pc), true, false)
	sa := udpEngine(b, ra, pc, false, false)
	flowClients(b, ra, addr, n)
	from, to := sa, sb
	for b.Loop() {
		if moved := moveFlows(b, from, to, adoptAll, func() {}); moved != n {
			b.Fatalf("%d flows moved, want %d", moved, n)
		}
		from, to = to, from
	}
	if n > 0 {
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*n), "µs/flow")
	}
}

// stuckResolver resolves every host name to 127.0.0.1, once released;
// asked hears of each lookup as it starts.
type stuckResolver struct {
	asked   chan string
	release chan struct{}
}

func newStuckResolver() *stuckResolver {
	return &stuckResolver{asked: make(chan string, 16), release: make(chan struct{})}
}

func (s *stuckResolver) LookupNetIP(ctx context.Context, _, host string) ([]netip.Addr, error) {
	s.asked <- host
	select {
	case <-s.release:
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// countedLoop is a loop whose posts are counted as they are made and as
// they have run: once both counts are equal, every post made before ran.
type countedLoop struct {
	udp.Loop
	posted, ran *atomic.Int64
}

func (l countedLoop) Post(fn func()) bool {
	l.posted.Add(1)
	return l.Loop.Post(func() { fn(); l.ran.Add(1) })
}

// TestUDPFlowMovesWhileResolving: a flow whose route's target is a host
// name, resolved off the loop (a stub resolver that answers when the test
// says), moves while the lookup is under way, as the datagrams it was
// given: the new process identifies them again and resolves and dials its
// own, and the old one closes the socket its lookup then gets. Restored
// instead, the flow goes on in the old process with its lookup's socket —
// also when the lookup ended while the flow was out, which used to leave
// it waiting for a dial that had come and gone. Each datagram is answered
// once. The clocks stand still: no flow expires while the test waits.
func TestUDPFlowMovesWhileResolving(t *testing.T) {
	for _, how := range []string{"moved", "restored", "resolved while out, restored", "resolved while out, moved"} {
		t.Run(how, func(t *testing.T) {
			echo := udptest.Echo(t, true)
			_, port, _ := net.SplitHostPort(echo)
			protos := []*protocols.Protocol{{Name: "UECHO", Target: "echo.test:" + port, Datagram: datagramPrefix("PING")}}
			stuck := newStuckResolver()
			var posted, ran atomic.Int64
			still := time.Unix(1e9, 0)
			oldOpts := func(o *udp.Options) {
				o.Resolver, o.Now = stuck, func() time.Time { return still }
				loops := o.Loops
				o.Loops = func() ([]udp.Loop, func()) {
					ls, done := loops()
					for i := range ls {
						ls[i] = countedLoop{ls[i], &posted, &ran}
					}
					return ls, done
				}
			}
			newOpts := func(o *udp.Options) {
				o.Now = func() time.Time { return still }
				o.Resolver = resolverFunc(func(string) []netip.Addr { return []netip.Addr{netip.MustParseAddr("127.0.0.1")} })
			}
			ro, rn, old, next, addr := movePairWith(t, protos, oldOpts, newOpts)
			c, err := net.DialUDP("udp", nil, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("PING0")); err != nil {
				t.Fatal(err)
			}
			select {
			case host := <-stuck.asked:
				if host != "echo.test" {
					t.Fatalf("resolving %q", host)
				}
			case <-time.After(bound):
				t.Fatal("the old engine never resolved the target")
			}
			old.e.PauseListeners()
			b := old.e.DetachFlows(handover.MaxFDsPerMessage)
			if b == nil || b.Len() != 1 {
				t.Fatalf("detached %+v", b)
			}
			if strings.HasPrefix(how, "resolved while out") {
				before := posted.Load()
				close(stuck.release)
				// Its outcome is posted to the loop: once a post made
				// after the release ran, and every other too, it came.
				testnet.Eventually(t, bound, func() bool { p := posted.Load(); return p > before && ran.Load() == p },
					"the lookup's outcome never reached the loop")
			}
			switch how {
			case "restored", "resolved while out, restored":
				old.e.RestoreFlows(b)
				old.e.ResumeListeners()
				if how == "restored" {
					close(stuck.release)
				}
				if got := ro.readUDP(c); got != "PING0|PING0" {
					t.Fatalf("the restored flow's answer: %q, want PING0|PING0", got)
				}
				if got := roundTrip(t, ro, c, "PING0-again"); got != "PING0|PING0-again" {
					t.Fatalf("the restored flow's next answer: %q (one flow, one socket)", got)
				}
				if n := old.e.Flows(); n != 1 {
					t.Errorf("%d flows in the old engine, want 1", n)
				}
			default:
				if !sendFlows(t, old, next, b) {
					t.Fatal("the flow did not move")
				}
				if how == "moved" {
					close(stuck.release) // the abandoned lookup ends; its socket is closed
				}
				if got := rn.readUDP(c); got != "PING0|PING0" {
					t.Fatalf("the moved flow's answer: %q, want PING0|PING0", got)
				}
				if got := roundTrip(t, rn, c, "PING0-again"); got != "PING0|PING0-again" {
					t.Fatalf("the moved flow's next answer: %q", got)
				}
				testnet.Eventually(t, bound, func() bool { return old.e.Flows() == 0 && ro.metric("protoplex_udp_flows_active") == 0 },
					"the old engine still holds the flow")
				if n := next.e.Flows(); n != 1 {
					t.Errorf("%d flows in the new engine, want 1", n)
				}
			}
		})
	}
}

// resolverFunc resolves every host name to what it returns at once.
type resolverFunc func(host string) []netip.Addr

func (f resolverFunc) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	return f(host), nil
}

// sendFlows moves the detached batch b from old to next over a handover
// socketpair, as the managers do (commit, hold, Adopted, start), and ends
// the phase; false when it did not move (it is restored).
func sendFlows(t *testing.T, old, next *moveSide, b *udp.FlowBatch) bool {
	t.Helper()
	oc, nc := handoverPair(t)
	defer oc.Close()
	defer nc.Close()
	if err := oc.Send(b.Msg, b.FDs); err != nil {
		old.e.RestoreFlows(b)
		t.Fatal(err)
	}
	m, files, err := nc.Recv()
	if err != nil {
		old.e.RestoreFlows(b)
		t.Fatal(err)
	}
	prep, err := next.e.PrepareFlows(m, files)
	if err != nil {
		old.e.RestoreFlows(b)
		t.Fatal(err)
	}
	if err := prep.Hold(); err != nil { // on the commit
		old.e.RestoreFlows(b)
		t.Fatal(err)
	}
	old.e.MovedFlows(b) // on the word that it holds them
	prep.Start()
	next.e.Release()
	return true
}
