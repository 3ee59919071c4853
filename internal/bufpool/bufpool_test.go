package bufpool

import (
	"sync"
	"testing"
)

// TestGetPutAccounting: a Get is served by the smallest tier that fits, and
// the counters follow every Get and Put.
func TestGetPutAccounting(t *testing.T) {
	p := New()
	sz := Sizes()
	for i, size := range []int{1, sz[0], sz[0] + 1, sz[1], sz[2], sz[3]} {
		want := 0
		for want < Tiers && size > sz[want] {
			want++
		}
		before := p.Stats()[want]
		b := p.Get(size)
		if len(*b) != sz[want] || cap(*b) != sz[want] {
			t.Fatalf("Get(%d) #%d: len %d cap %d, want the tier of %d", size, i, len(*b), cap(*b), sz[want])
		}
		st := p.Stats()[want]
		if st.Gets != before.Gets+1 || st.InUse != before.InUse+1 || st.Size != sz[want] {
			t.Fatalf("Get(%d): tier stats %+v, before %+v", size, st, before)
		}
		if got := p.InUseBytes(); got != int64(sz[want]) {
			t.Fatalf("Get(%d): %d bytes in use, want %d", size, got, sz[want])
		}
		*b = (*b)[:3] // a caller may reslice; Put restores the full length
		p.Put(b)
		st = p.Stats()[want]
		if st.Puts != before.Puts+1 || st.InUse != before.InUse {
			t.Fatalf("Put after Get(%d): tier stats %+v, before %+v", size, st, before)
		}
		if got := p.InUseBytes(); got != 0 {
			t.Fatalf("Put after Get(%d): %d bytes in use", size, got)
		}
	}
	var gets, misses int64
	for _, st := range p.Stats() {
		gets += st.Gets
		misses += st.Misses
	}
	if gets != 6 || misses < 1 || misses > gets {
		t.Fatalf("%d gets, %d misses", gets, misses)
	}
	if p.Outside() != 0 {
		t.Fatalf("%d outside allocations for sizes within the tiers", p.Outside())
	}
}

// TestReusedBufferHasFullLength: a buffer taken again after a Put has its
// tier's full length even if the previous user shortened it.
func TestReusedBufferHasFullLength(t *testing.T) {
	p := New()
	for range 100 {
		b := p.Get(10)
		if len(*b) != Sizes()[0] {
			t.Fatalf("len %d, want %d", len(*b), Sizes()[0])
		}
		*b = (*b)[:0]
		p.Put(b)
	}
}

// TestOutsideAllocations: a size over the largest tier is allocated
// exactly, counted as outside, never in a tier or in the bytes in use, and
// Put lets it go.
func TestOutsideAllocations(t *testing.T) {
	p := New()
	size := Sizes()[Tiers-1] + 1
	b := p.Get(size)
	if len(*b) != size {
		t.Fatalf("len %d, want %d", len(*b), size)
	}
	if p.Outside() != 1 || p.InUseBytes() != 0 {
		t.Fatalf("outside %d, in use %d bytes", p.Outside(), p.InUseBytes())
	}
	p.Put(b)
	// A buffer of a size no tier has, even one that fits a tier, is not
	// taken into that tier.
	odd := make([]byte, 100)
	p.Put(&odd)
	for i, st := range p.Stats() {
		if st.Gets != 0 || st.Puts != 0 || st.InUse != 0 {
			t.Fatalf("tier %d counted a buffer not its own: %+v", i, st)
		}
	}
}

// TestConcurrentGetPut: the counters balance after concurrent use (run
// with -race).
func TestConcurrentGetPut(t *testing.T) {
	p := New()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				b := p.Get((g*1000 + i) % (Sizes()[Tiers-1] + 1))
				(*b)[0] = byte(i)
				p.Put(b)
			}
		}()
	}
	wg.Wait()
	if p.InUseBytes() != 0 {
		t.Fatalf("%d bytes in use after every buffer was returned", p.InUseBytes())
	}
	var gets, puts int64
	for _, st := range p.Stats() {
		gets += st.Gets
		puts += st.Puts
		if st.InUse != 0 {
			t.Fatalf("tier %+v in use", st)
		}
	}
	if gets != 8000 || puts != 8000 {
		t.Fatalf("%d gets, %d puts, want 8000", gets, puts)
	}
}

// TestGetPutAllocationFree: a Get served from the pool and its Put
// allocate nothing. The race detector drops pooled items at random, so the
// check needs a build without it.
func TestGetPutAllocationFree(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	p := New()
	p.Put(p.Get(4 << 10))
	if n := testing.AllocsPerRun(1000, func() { p.Put(p.Get(4 << 10)) }); n != 0 {
		t.Fatalf("%v allocations per Get/Put", n)
	}
}

func BenchmarkGetPut(b *testing.B) {
	p := New()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			p.Put(p.Get(4 << 10))
		}
	})
}

// TestLease: a lease has the size asked for, and releasing it twice gives
// the buffer back once.
func TestLease(t *testing.T) {
	p := New()
	l := p.Lease(3000)
	if len(l.B) != 3000 || p.Stats()[1].InUse != 1 {
		t.Fatalf("lease of 3000: len %d, tier in use %d", len(l.B), p.Stats()[1].InUse)
	}
	l.Release()
	l.Release()
	if st := p.Stats()[1]; st.InUse != 0 || st.Puts != 1 || l.B != nil {
		t.Fatalf("after two releases: %+v, B %v", st, l.B)
	}
}
