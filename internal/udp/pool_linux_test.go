package udp

import (
	"net/netip"
	"testing"
	"time"
	"unsafe"
)

// socketTo is a reusable socket (no descriptor) to target.
func socketTo(target netip.AddrPort, fd int) *rawUp {
	return &rawUp{fd: int32(fd), reuse: &reusable{pool: pooled{target: target}}}
}

// TestPoolTakesOldestPerTarget: a socket goes only to a flow to its own
// target, oldest first, and once.
func TestPoolTakesOldestPerTarget(t *testing.T) {
	tb := &Table{}
	a, b := netip.MustParseAddrPort("127.0.0.1:53"), netip.MustParseAddrPort("127.0.0.2:53")
	p := newUpPool()
	now := time.Unix(1000, 0)
	if u := p.stale(tb, now); u != nil {
		t.Fatal("an empty pool gave a socket to close")
	}
	u1, u2, u3 := socketTo(a, 1), socketTo(a, 2), socketTo(a, 3)
	for _, s := range []struct {
		u  *rawUp
		to netip.AddrPort
	}{{u1, a}, {u2, b}, {u3, a}} {
		s.u.reuse.pool.target = s.to
		if ok, out := p.put(tb, s.u, now); !ok || out != nil {
			t.Fatalf("put fd %d: %v %v", s.u.fd, ok, out)
		}
	}
	if p.len() != 3 {
		t.Fatalf("len %d, want 3", p.len())
	}
	for i, want := range []*rawUp{u1, u3, nil} {
		if got := p.take(tb, a); got != want {
			t.Errorf("take %d for a: %v, want %v", i, got, want)
		}
	}
	if got := p.take(tb, b); got != u2 {
		t.Errorf("take for b: %v, want fd 2", got)
	}
	if p.len() != 0 || len(p.targets) != 0 {
		t.Errorf("pool holds %d sockets, %d targets after every take", p.len(), len(p.targets))
	}
}

// TestPoolBounds: a full pool gives back the socket kept longest; a
// socket idle PoolIdle is closed by the sweep, one idle less is kept.
func TestPoolBounds(t *testing.T) {
	tb := &Table{}
	a := netip.MustParseAddrPort("127.0.0.1:53")
	p := newUpPool()
	now := time.Unix(1000, 0)
	p.stale(tb, now)
	ups := make([]*rawUp, MaxPooledSockets+1)
	for i := range ups {
		ups[i] = socketTo(a, i)
		ok, out := p.put(tb, ups[i], now.Add(time.Duration(i)*time.Millisecond))
		switch {
		case !ok:
			t.Fatalf("put %d refused", i)
		case i < MaxPooledSockets && out != nil:
			t.Fatalf("put %d of %d pushed out fd %d", i, MaxPooledSockets, out.fd)
		case i == MaxPooledSockets && out != ups[0]:
			t.Fatalf("a full pool pushed out %v, want the oldest", out)
		}
	}
	if p.len() != MaxPooledSockets {
		t.Fatalf("len %d, want %d", p.len(), MaxPooledSockets)
	}
	// ups[1] was put 1 ms after now, ups[2] 2 ms.
	if u := p.stale(tb, now.Add(PoolIdle)); u != nil {
		t.Fatalf("fd %d closed before it was idle PoolIdle", u.fd)
	}
	if u := p.stale(tb, now.Add(PoolIdle+time.Millisecond)); u != ups[1] {
		t.Fatalf("stale at PoolIdle: %v, want fd 1", u)
	}
	if u := p.stale(tb, now.Add(PoolIdle+time.Millisecond)); u != nil {
		t.Fatalf("fd %d closed before it was idle PoolIdle", u.fd)
	}
	if u := p.take(tb, a); u != ups[2] {
		t.Errorf("take after expiry: %v, want fd 2", u)
	}
}

// TestPoolEmptiedByANewTable: after a reload (a table other than the
// one the sockets came from) nothing is taken or put until every pooled
// socket was given back to close; then the pool serves the new table.
func TestPoolEmptiedByANewTable(t *testing.T) {
	old, cur := &Table{}, &Table{}
	a := netip.MustParseAddrPort("127.0.0.1:53")
	p := newUpPool()
	now := time.Unix(1000, 0)
	p.stale(old, now)
	u1, u2 := socketTo(a, 1), socketTo(a, 2)
	p.put(old, u1, now)
	p.put(old, u2, now)
	if got := p.take(cur, a); got != nil {
		t.Fatalf("a flow of the new table took fd %d of the old", got.fd)
	}
	if ok, _ := p.put(cur, socketTo(a, 3), now); ok {
		t.Fatal("the pool took a socket of the new table before it was emptied")
	}
	var closed []int
	for u := p.stale(cur, now); u != nil; u = p.stale(cur, now) {
		closed = append(closed, int(u.fd))
	}
	if len(closed) != 2 || p.len() != 0 {
		t.Fatalf("closed %v, %d left; want 1 and 2, none", closed, p.len())
	}
	if ok, _ := p.put(old, socketTo(a, 4), now); ok {
		t.Fatal("the pool took a socket of the old table after the reload")
	}
	if ok, _ := p.put(cur, u1, now); !ok || p.take(cur, a) != u1 {
		t.Fatal("the new table's socket not pooled")
	}
}

// TestPoolRemove: a pooled socket that fails leaves the pool.
func TestPoolRemove(t *testing.T) {
	tb := &Table{}
	a := netip.MustParseAddrPort("127.0.0.1:53")
	p := newUpPool()
	now := time.Unix(1000, 0)
	p.stale(tb, now)
	u1, u2 := socketTo(a, 1), socketTo(a, 2)
	p.put(tb, u1, now)
	p.put(tb, u2, now)
	p.remove(u1)
	p.remove(u1) // twice is harmless
	if p.len() != 1 || p.take(tb, a) != u2 || p.take(tb, a) != nil {
		t.Fatal("the removed socket is still pooled")
	}
}

// TestRawUpStaysSmall: a flow's socket on a loop is one per idle flow, so
// what pooling adds lives behind a pointer only sockets for reuse have.
func TestRawUpStaysSmall(t *testing.T) {
	if n := unsafe.Sizeof(rawUp{}); n > 32 {
		t.Errorf("rawUp takes %d bytes, want at most 32", n)
	}
}
