// Package bufpool holds the tiered pools of identification buffers. A buffer
// comes from the smallest tier that fits the requested size and goes back
// when identification ends, so an idle forwarded connection holds none and
// a manager's buffer memory follows its connections being identified.
package bufpool

import (
	"sync"
	"sync/atomic"
)

// Tiers is the number of pool tiers.
const Tiers = 4

// sizes of the tiers, smallest first.
var sizes = [Tiers]int{1600, 4 << 10, 32 << 10, 128 << 10}

// Sizes returns the buffer size of each tier, smallest first.
func Sizes() [Tiers]int { return sizes }

// Pools are the tiers of one manager. The zero value is not usable; call New.
// A Pools is safe for concurrent use.
type Pools struct {
	tiers [Tiers]tier
	// outside counts Gets larger than the largest tier, served by plain
	// allocations the garbage collector takes back.
	outside atomic.Int64
	inUse   atomic.Int64 // bytes of tier buffers handed out and not yet returned
}

type tier struct {
	size                      int
	pool                      sync.Pool
	gets, puts, misses, inUse atomic.Int64
}

// TierStats counts one tier's operations.
type TierStats struct {
	Size   int   // bytes per buffer
	Gets   int64 // buffers handed out
	Puts   int64 // buffers returned
	Misses int64 // Gets the pool could not serve, so allocated
	InUse  int64 // handed out and not yet returned
}

// New returns empty pools.
func New() *Pools {
	p := &Pools{}
	for i, s := range sizes {
		p.tiers[i].size = s
	}
	return p
}

func (p *Pools) tierFor(size int) *tier {
	for i := range p.tiers {
		if size <= p.tiers[i].size {
			return &p.tiers[i]
		}
	}
	return nil
}

// Get returns a buffer of at least size bytes, its length the size of its
// tier. A size over the largest tier is a plain allocation of exactly size
// bytes, counted by Outside.
func (p *Pools) Get(size int) *[]byte {
	t := p.tierFor(size)
	if t == nil {
		p.outside.Add(1)
		buf := make([]byte, size)
		return &buf
	}
	t.gets.Add(1)
	t.inUse.Add(1)
	p.inUse.Add(int64(t.size))
	if b, ok := t.pool.Get().(*[]byte); ok {
		return b
	}
	t.misses.Add(1)
	buf := make([]byte, t.size)
	return &buf
}

// Put returns a buffer obtained from Get; the caller must not use it
// afterwards. A buffer that is not a tier's (an outside allocation) is left
// to the garbage collector.
func (p *Pools) Put(b *[]byte) {
	t := p.tierFor(cap(*b))
	if t == nil || cap(*b) != t.size {
		return
	}
	t.puts.Add(1)
	t.inUse.Add(-1)
	p.inUse.Add(-int64(t.size))
	*b = (*b)[:t.size]
	t.pool.Put(b)
}

// Stats returns each tier's counters, smallest tier first.
func (p *Pools) Stats() [Tiers]TierStats {
	var out [Tiers]TierStats
	for i := range p.tiers {
		t := &p.tiers[i]
		out[i] = TierStats{Size: t.size, Gets: t.gets.Load(), Puts: t.puts.Load(), Misses: t.misses.Load(), InUse: t.inUse.Load()}
	}
	return out
}

// Outside returns how many Gets were larger than the largest tier.
func (p *Pools) Outside() int64 { return p.outside.Load() }

// InUseBytes returns the bytes of tier buffers handed out and not yet
// returned (outside allocations are not counted).
func (p *Pools) InUseBytes() int64 { return p.inUse.Load() }

// Lease is one buffer of exactly the size asked for, taken from p until
// Release: a connection's identification buffer, given back as soon as its
// bytes are replayed, however many code paths end the connection.
type Lease struct {
	p   *Pools
	buf *[]byte
	// B is the buffer, len the size asked for; nil after Release.
	B []byte
}

// Lease takes a buffer of size bytes.
func (p *Pools) Lease(size int) *Lease {
	b := p.Get(size)
	return &Lease{p: p, buf: b, B: (*b)[:size]}
}

// Release gives the buffer back; later calls do nothing.
func (l *Lease) Release() {
	if l.buf != nil {
		l.p.Put(l.buf)
		l.buf, l.B = nil, nil
	}
}
