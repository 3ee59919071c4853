package identify

import (
	"bytes"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

const (
	defaultCacheEntries = 4096
	// maxCachedFlight bounds what one entry stores: long first flights are
	// rarely repeated byte for byte, and storing them would cost memory.
	maxCachedFlight = 512
	cacheShards     = 16
)

// Cache remembers final verdicts by the exact bytes they were computed from.
// Evaluate is a pure function of those bytes, so a hit returns precisely what
// Evaluate would: the cache can make identification cheaper, never different.
// (Keying by client ip:port, as naive designs do, would be both useless for new
// connections and wrong when ports are reused.)
type Cache struct {
	ttl    time.Duration
	max    int
	seed   maphash.Seed
	shards [cacheShards]cacheShard

	counters *CacheCounters
}

// CacheCounters count lookups and hits; a manager shares one across the
// caches of successive tables so its metrics survive reloads.
type CacheCounters struct {
	lookups, hits atomic.Int64
}

// Load returns lookups and hits.
func (c *CacheCounters) Load() (lookups, hits int64) { return c.lookups.Load(), c.hits.Load() }

type cacheShard struct {
	mu sync.Mutex
	m  map[uint64]cacheEntry
}

type cacheEntry struct {
	data    []byte
	verdict Verdict
	expires int64 // unix nanos
}

// NewCache returns a cache holding at most max entries for ttl each.
// counters may be nil.
func NewCache(ttl time.Duration, max int, counters *CacheCounters) *Cache {
	if counters == nil {
		counters = &CacheCounters{}
	}
	c := &Cache{ttl: ttl, max: max, seed: maphash.MakeSeed(), counters: counters}
	for i := range c.shards {
		c.shards[i].m = make(map[uint64]cacheEntry)
	}
	return c
}

// Get returns the cached verdict for exactly data.
func (c *Cache) Get(data []byte, now time.Time) (Verdict, bool) {
	if len(data) > maxCachedFlight {
		return Verdict{}, false
	}
	c.counters.lookups.Add(1)
	h := maphash.Bytes(c.seed, data)
	s := &c.shards[h%cacheShards]
	s.mu.Lock()
	e, ok := s.m[h]
	s.mu.Unlock()
	if !ok || e.expires < now.UnixNano() || !bytes.Equal(e.data, data) {
		return Verdict{}, false
	}
	c.counters.hits.Add(1)
	return e.verdict, true
}

// Put stores a final verdict (Final match or Rejected) for data.
func (c *Cache) Put(data []byte, v Verdict, now time.Time) {
	if len(data) > maxCachedFlight || !(v.Final || v.Rejected) {
		return
	}
	h := maphash.Bytes(c.seed, data)
	s := &c.shards[h%cacheShards]
	e := cacheEntry{data: bytes.Clone(data), verdict: v, expires: now.Add(c.ttl).UnixNano()}
	s.mu.Lock()
	if len(s.m) >= c.max/cacheShards {
		// Evict expired entries, or an arbitrary one when none expired: the
		// cache is an optimisation, losing an entry only costs a detection.
		n := now.UnixNano()
		evicted := false
		for k, old := range s.m {
			if old.expires < n {
				delete(s.m, k)
				evicted = true
			}
		}
		if !evicted {
			for k := range s.m {
				delete(s.m, k)
				break
			}
		}
	}
	s.m[h] = e
	s.mu.Unlock()
}

// Stats returns the cache's counters.
func (c *Cache) Stats() (lookups, hits int64) { return c.counters.Load() }
