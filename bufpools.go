package protoplex

import (
	"sync"
	"sync/atomic"
)

// bufferPools are the tiered pools of identification buffers (the seed's
// 1600 B / 4 KiB / 32 KiB / 128 KiB): a buffer comes from the smallest tier
// that fits BufferSize and goes back when identification ends, so an idle
// forwarded connection holds none.
type bufferPools struct {
	tiers [4]bufferTier
	// outside counts buffers larger than the largest tier (plain allocations).
	outside PoolOperationStats
	current atomic.Int64 // bytes handed out and not yet returned
}

type bufferTier struct {
	size                      int
	pool                      sync.Pool
	gets, puts, misses, inUse atomic.Int64
}

var tierSizes = [4]int{1600, 4 << 10, 32 << 10, 128 << 10}

func newBufferPools() *bufferPools {
	b := &bufferPools{}
	for i, s := range tierSizes {
		b.tiers[i].size = s
	}
	return b
}

func (b *bufferPools) tierFor(size int) *bufferTier {
	for i := range b.tiers {
		if size <= b.tiers[i].size {
			return &b.tiers[i]
		}
	}
	return nil
}

// get returns a buffer of at least size bytes.
func (b *bufferPools) get(size int) *[]byte {
	t := b.tierFor(size)
	if t == nil {
		buf := make([]byte, size)
		return &buf
	}
	t.gets.Add(1)
	t.inUse.Add(1)
	b.current.Add(int64(t.size))
	if p, ok := t.pool.Get().(*[]byte); ok {
		return p
	}
	t.misses.Add(1)
	buf := make([]byte, t.size)
	return &buf
}

// put returns a buffer obtained from get.
func (b *bufferPools) put(p *[]byte) {
	t := b.tierFor(cap(*p))
	if t == nil || cap(*p) != t.size {
		return // an outside allocation: the GC takes it
	}
	t.puts.Add(1)
	t.inUse.Add(-1)
	b.current.Add(-int64(t.size))
	*p = (*p)[:t.size]
	t.pool.Put(p)
}

func (t *bufferTier) stats() PoolOperationStats {
	return PoolOperationStats{Gets: t.gets.Load(), Puts: t.puts.Load(), Misses: t.misses.Load(), InUse: t.inUse.Load()}
}
