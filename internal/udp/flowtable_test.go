package udp

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/guard"
	"github.com/darkit/protoplex/internal/metrics"
)

// The flow table's decisions, driven by a test clock and scripted
// datagrams: no socket, no goroutine.

var t0 = time.Unix(1_000_000, 0)

func client(a string, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(a), port)
}

// open is what a listener does for a new flow: room (evicting the victim
// while there is none), then insert.
func open(t *testing.T, ft *flowTable, c netip.AddrPort, now time.Time, maxFlows int) (f, evicted *flow) {
	t.Helper()
	for !ft.room(maxFlows) {
		evicted = ft.victim()
		if evicted == nil || !ft.remove(evicted) {
			t.Fatalf("no room and no victim for %v", c)
		}
	}
	return ft.insert(c, now, true, guard.Ticket{}), evicted
}

// routedAt makes f a routed flow at now with idle timeout idle.
func routedAt(ft *flowTable, f *flow, idle time.Duration, now time.Time) {
	f.state = stRouted
	ft.routed(f, idle, now)
}

func TestFlowTablePerSourceCap(t *testing.T) {
	ft := newFlowTable(newSources(), &budget{}, &budget{})
	for port := range uint16(3) {
		if ft.sourceFull(client("192.0.2.1", 1000+port), 3) {
			t.Fatalf("port %d: full before 3 flows", port)
		}
		open(t, ft, client("192.0.2.1", 1000+port), t0, 100)
	}
	if !ft.sourceFull(client("192.0.2.1", 2000), 3) {
		t.Fatal("a fourth flow of one address under a cap of 3")
	}
	if ft.sourceFull(client("192.0.2.1", 2000), 0) {
		t.Fatal("cap 0 is no cap")
	}
	if ft.sourceFull(client("192.0.2.2", 1000), 3) {
		t.Fatal("another address counted with the first")
	}
	// An IPv6 /64 is one source.
	open(t, ft, client("2001:db8::1", 53), t0, 100)
	if !ft.sourceFull(client("2001:db8::ffff:1", 53), 1) || ft.sourceFull(client("2001:db8:0:1::1", 53), 1) {
		t.Fatal("IPv6 sources are not /64s")
	}
	// Removing a flow gives its place back; a flow opened without a cap
	// (countSource false) never counts.
	ft.remove(ft.lookup(client("192.0.2.1", 1000)))
	if ft.sourceFull(client("192.0.2.1", 2000), 3) {
		t.Fatal("a removed flow still counts")
	}
	ft.insert(client("192.0.2.1", 3000), t0, false, guard.Ticket{})
	if ft.sourceFull(client("192.0.2.1", 2000), 3) {
		t.Fatal("a flow opened without a cap counts")
	}
}

// The table evicts the flow idle longest, activity (f.last) included, and
// two tables share one bound.
func TestFlowTableEvictsIdleLongest(t *testing.T) {
	count := &budget{}
	ft, other := newFlowTable(newSources(), count, &budget{}), newFlowTable(newSources(), count, &budget{})
	var fs []*flow
	for i := range 3 {
		f, ev := open(t, ft, client("192.0.2.1", uint16(1000+i)), t0.Add(time.Duration(i)*time.Second), 4)
		if ev != nil {
			t.Fatalf("flow %d evicted %v with room", i, ev.client)
		}
		routedAt(ft, f, time.Minute, t0.Add(time.Duration(i)*time.Second))
		fs = append(fs, f)
	}
	fs[0].last.Store(t0.Add(5 * time.Second).UnixNano()) // a datagram: fs[1] is now the idle longest
	open(t, other, client("192.0.2.9", 1), t0, 4)        // the fourth place, on another table
	_, ev := open(t, ft, client("192.0.2.1", 2000), t0.Add(6*time.Second), 4)
	if ev != fs[1] {
		t.Fatalf("evicted %v, want the flow idle longest %v", ev, fs[1].client)
	}
	if count.load() != 4 || ft.len() != 3 || other.len() != 1 {
		t.Fatalf("count %d, tables %d and %d: want 4, 3, 1", count.load(), ft.len(), other.len())
	}
}

// Undecided flows hold their datagrams within MaxPendingBytes each and
// MaxPendingTotal across tables; a route is decided by the table, more
// waits (due after MaxWait), and the final decision takes the fallback
// or drops the flow as timed out.
func TestFlowTableIdentifies(t *testing.T) {
	st := metrics.New().UDP
	tb := NewTable([]Route{{Name: "two", Detect: twoStep, Targets: []string{"127.0.0.1:1"}}}, st)
	pending := &budget{}
	ft := newFlowTable(newSources(), &budget{}, pending)
	f, _ := open(t, ft, client("192.0.2.1", 1), t0, 10)
	if r, more, _ := ft.identify(f, []byte("A"), tb, t0, false); r != nil || !more {
		t.Fatalf("first datagram: %v, more %v; want more", r, more)
	}
	if pending.load() != 1 || ft.due(t0.Add(MaxWait-time.Nanosecond)) != nil {
		t.Fatalf("pending %d, due before MaxWait %v", pending.load(), ft.due(t0.Add(MaxWait-time.Nanosecond)))
	}
	if ft.due(t0.Add(MaxWait)) != f {
		t.Fatal("not due at MaxWait")
	}
	if r, _, why := ft.identify(f, nil, tb, t0.Add(MaxWait), true); r != nil || why != metrics.UDPTimeout {
		t.Fatalf("final without a match: %v %v; want none, timeout", r, why)
	}
	ft.remove(f)
	if pending.load() != 0 {
		t.Fatalf("pending %d after the flow ended", pending.load())
	}

	g, _ := open(t, ft, client("192.0.2.1", 2), t0, 10)
	ft.identify(g, []byte("A"), tb, t0, false)
	r, more, _ := ft.identify(g, []byte("B"), tb, t0.Add(time.Second), false)
	if r == nil || r.Name != "two" || more {
		t.Fatalf("second datagram: %v, more %v; want the route", r, more)
	}
	if len(g.pending) != 2 || !bytes.Equal(g.pending[1], []byte("B")) {
		t.Fatalf("held %q", g.pending)
	}
	routedAt(ft, g, 10*time.Second, t0.Add(time.Second))
	if pending.load() != 0 || g.pending != nil {
		t.Fatalf("a routed flow holds %d bytes", pending.load())
	}
	if ft.due(t0.Add(10*time.Second)) != nil || ft.due(t0.Add(11*time.Second)) != g {
		t.Fatal("the routed flow is not due exactly at its idle timeout")
	}

	// Bounds: one flow's MaxPendingBytes, and MaxPendingTotal over tables.
	h, _ := open(t, ft, client("192.0.2.1", 3), t0, 10)
	if !ft.hold(h, make([]byte, MaxPendingBytes)) || ft.hold(h, []byte{1}) {
		t.Fatal("MaxPendingBytes per flow")
	}
	if _, _, why := ft.identify(newFlowInto(t, ft, 4), make([]byte, MaxPendingBytes+1), tb, t0, false); why != metrics.UDPPendingFull {
		t.Fatalf("a first datagram over MaxPendingBytes: %v, want pending_full", why)
	}
	other := newFlowTable(newSources(), &budget{}, pending)
	for i := range MaxPendingTotal/MaxPendingBytes - 1 {
		if !other.hold(newFlowInto(t, other, uint16(i)), make([]byte, MaxPendingBytes)) {
			t.Fatalf("flow %d: refused under MaxPendingTotal", i)
		}
	}
	if other.hold(newFlowInto(t, other, 9999), []byte{1}) {
		t.Fatal("held past MaxPendingTotal across two tables")
	}
}

func newFlowInto(t *testing.T, ft *flowTable, port uint16) *flow {
	f, _ := open(t, ft, client("198.51.100.1", port), t0, 1<<20)
	return f
}

// A routed flow awaiting its first reply is handed back once, window after
// it was routed, when it sent and got nothing; answered or ended flows
// leave the list quietly.
func TestFlowTableUnanswered(t *testing.T) {
	ft := newFlowTable(newSources(), &budget{}, &budget{})
	var fs []*flow
	for i := range 4 {
		f, _ := open(t, ft, client("192.0.2.1", uint16(i+1)), t0, 10)
		routedAt(ft, f, time.Minute, t0.Add(time.Duration(i)*time.Second))
		ft.await(f, t0.Add(time.Duration(i)*time.Second))
		f.dgUp.Store(1)
		fs = append(fs, f)
	}
	fs[1].dgDown.Store(1) // answered
	ft.remove(fs[2])      // ended
	if f := ft.unanswered(t0.Add(2*time.Second), 3*time.Second); f != nil {
		t.Fatalf("%v unanswered before its window", f.client)
	}
	if f := ft.unanswered(t0.Add(3*time.Second), 3*time.Second); f != fs[0] {
		t.Fatalf("got %v, want the first flow", f)
	}
	if f := ft.unanswered(t0.Add(time.Hour), 3*time.Second); f != fs[3] {
		t.Fatalf("got %v, want the fourth flow (the second answered, the third ended)", f)
	}
	if f := ft.unanswered(t0.Add(time.Hour), 3*time.Second); f != nil {
		t.Fatalf("%v handed back twice", f.client)
	}
}
