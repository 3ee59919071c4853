package udp

import (
	"hash/maphash"
	"testing"

	"github.com/darkit/protoplex/internal/udp/udptest"
)

var dnsMsg = udptest.DNS

// TestDNSKeyTiesReplyToQuery: a reply's key is its query's (the case of
// the question aside); another ID, name or type is another key; what is
// not a whole header and question section has none.
func TestDNSKeyTiesReplyToQuery(t *testing.T) {
	seed := maphash.MakeSeed()
	key := func(b []byte) queryKey {
		t.Helper()
		k, ok := dnsKey(b, seed)
		if !ok {
			t.Fatalf("no key for % x", b)
		}
		return k
	}
	q := key(dnsMsg(7, "example.test", false))
	if r := key(dnsMsg(7, "example.test", true)); r != q {
		t.Errorf("reply key %v, query key %v", r, q)
	}
	if r := key(dnsMsg(7, "ExAmple.TEST", true)); r != q {
		t.Errorf("reply with the question's case changed: key %v, want %v", r, q)
	}
	for name, other := range map[string][]byte{
		"another ID":   dnsMsg(8, "example.test", true),
		"another name": dnsMsg(7, "example.tesu", true),
		"another type": func() []byte { b := dnsMsg(7, "example.test", true); b[12+14] = 28; return b }(),
	} {
		if key(other) == q {
			t.Errorf("%s: same key as the query", name)
		}
	}
	noQ := dnsMsg(7, "example.test", true)[:12]
	noQ[5] = 0
	if k := key(noQ); !k.noQuestion || k.id != 7 {
		t.Errorf("reply without a question: %+v", k)
	}
	whole := dnsMsg(7, "example.test", false)
	for n := range len(whole) {
		if n == 0 {
			continue
		}
		if _, ok := dnsKey(whole[:n], seed); ok {
			t.Errorf("a key for the first %d of %d bytes", n, len(whole))
		}
	}
	bad := dnsMsg(7, "example.test", false)
	bad[12] = 64 // a label longer than 63
	if _, ok := dnsKey(bad, seed); ok {
		t.Error("a key for a label of 64 bytes")
	}
	many := dnsMsg(7, "example.test", false)
	many[5] = dnsMaxQuestions + 1
	if _, ok := dnsKey(many, seed); ok {
		t.Error("a key for 17 questions")
	}
}

// TestQueryGuard: a reply passes once per query it answers (a
// retransmitted query twice), a reply of another query never, and the
// guard records at most maxFlowQueries unanswered queries.
func TestQueryGuard(t *testing.T) {
	seed := maphash.MakeSeed()
	var g queryGuard
	g.reset(true)
	for _, id := range []uint16{1, 2, 2} {
		if !g.ask(dnsMsg(id, "a.test", false), seed) {
			t.Fatalf("query %d refused", id)
		}
	}
	steps := []struct {
		id   uint16
		name string
		want bool
	}{{3, "a.test", false}, {1, "b.test", false}, {2, "a.test", true}, {1, "a.test", true}, {1, "a.test", false}, {2, "a.test", true}, {2, "a.test", false}}
	for i, s := range steps {
		if got := g.answers(dnsMsg(s.id, s.name, true), seed); got != s.want {
			t.Errorf("step %d: reply %d %s passed %v, want %v", i, s.id, s.name, got, s.want)
		}
	}
	if !g.settled() {
		t.Errorf("%d queries unanswered, want 0", len(g.keys))
	}
	if g.ask([]byte("not DNS"), seed) {
		t.Error("a datagram that is no DNS message recorded")
	}
	for i := range maxFlowQueries {
		if !g.ask(dnsMsg(uint16(i), "a.test", false), seed) {
			t.Fatalf("query %d of %d refused", i, maxFlowQueries)
		}
	}
	if g.ask(dnsMsg(9999, "a.test", false), seed) {
		t.Errorf("query %d recorded past the bound", maxFlowQueries+1)
	}
	g.reset(true)
	if !g.settled() || g.answers(dnsMsg(1, "a.test", true), seed) {
		t.Error("reset kept a query")
	}
}

// TestQueryGuardDoesNotAllocate: once its keys have room, the guard
// allocates nothing per query or reply.
func TestQueryGuardDoesNotAllocate(t *testing.T) {
	seed := maphash.MakeSeed()
	q, r := dnsMsg(5, "www.example.test", false), dnsMsg(5, "www.example.test", true)
	var g queryGuard
	g.reset(true)
	g.ask(q, seed)
	g.answers(r, seed)
	if n := testing.AllocsPerRun(100, func() {
		g.ask(q, seed)
		if !g.answers(r, seed) {
			t.Fatal("reply refused")
		}
	}); n != 0 {
		t.Errorf("%v allocations per query and reply", n)
	}
}

// FuzzDNSKey: any bytes give a key or none without a panic, the same
// twice; a query's key is found by its reply (QR set), which differs from
// it only in the flags.
func FuzzDNSKey(f *testing.F) {
	f.Add(dnsMsg(1, "example.test", false))
	f.Add(dnsMsg(0xffff, "a.b.c.d.e", true))
	f.Add([]byte{0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	seed := maphash.MakeSeed()
	f.Fuzz(func(t *testing.T, b []byte) {
		k, ok := dnsKey(b, seed)
		k2, ok2 := dnsKey(b, seed)
		if k != k2 || ok != ok2 {
			t.Fatalf("two keys of the same bytes: %v %v / %v %v", k, ok, k2, ok2)
		}
		if !ok {
			return
		}
		var g queryGuard
		g.reset(true)
		if !g.ask(b, seed) {
			t.Fatal("a message with a key refused")
		}
		r := append([]byte(nil), b...)
		r[2] |= 0x80
		if !g.answers(r, seed) {
			t.Fatal("its reply refused")
		}
	})
}
