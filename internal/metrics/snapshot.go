package metrics

import (
	"math"
	rtmetrics "runtime/metrics"

	"github.com/darkit/protoplex/internal/bufpool"
	"github.com/darkit/protoplex/internal/guard"
)

// The types below are the typed snapshot a manager's GetMetrics returns;
// the root package exports them under the same names. They carry no
// methods, so they add nothing to that public API but their fields.

// PoolMetrics: backend connections dialed (Created) vs served warm (Reused).
type PoolMetrics struct {
	ConnectionsCreated int64 `json:"connections_created"`
	ConnectionsReused  int64 `json:"connections_reused"`
	Active             int64 `json:"active"`
	Idle               int64 `json:"idle"`
	HealthChecks       int64 `json:"health_checks"`
	DialFailures       int64 `json:"dial_failures"`
}

// PoolOperationStats counts one byte-pool tier's operations.
type PoolOperationStats struct {
	Gets   int64 `json:"gets"`
	Puts   int64 `json:"puts"`
	Misses int64 `json:"misses"`
	InUse  int64 `json:"in_use"`
}

// DetailedMemoryPoolMetrics describes the identification buffer pools and the
// Go heap.
type DetailedMemoryPoolMetrics struct {
	PoolStats struct {
		SmallPool    PoolOperationStats `json:"small_pool"`
		MediumPool   PoolOperationStats `json:"medium_pool"`
		LargePool    PoolOperationStats `json:"large_pool"`
		IdentityPool PoolOperationStats `json:"identity_pool"`
	} `json:"pool_stats"`
	MemoryStats struct {
		CurrentAllocatedBytes int64  `json:"current_allocated_bytes"`
		RuntimeAllocBytes     uint64 `json:"runtime_alloc_bytes"`
	} `json:"memory_stats"`
	GCStats struct {
		GCRuns       uint32 `json:"gc_runs"`
		GCPauseAvgNs uint64 `json:"gc_pause_avg_ns"`
	} `json:"gc_stats"`
}

// ProtocolManagerMetrics is a snapshot of a manager's counters.
type ProtocolManagerMetrics struct {
	ActiveConnections int64                     `json:"active_connections"`
	ConnectionPool    PoolMetrics               `json:"connection_pool"`
	Security          guard.Metrics             `json:"security"`
	MemoryPool        DetailedMemoryPoolMetrics `json:"memory_pool"`
	// CacheHitRate is identification cache hits / lookups (0..1).
	CacheHitRate float64 `json:"cache_hit_rate"`
	// Per protocol: connections identified, by the routes still configured
	// or with connections draining (a removed route's count goes with it).
	Identified map[string]int64 `json:"identified"`
}

// ReadBuffers fills m's pool figures from p: its tiers, smallest first, are
// the identity, small, medium and large pools, and CurrentAllocatedBytes
// the bytes of tier buffers handed out.
func ReadBuffers(m *DetailedMemoryPoolMetrics, p *bufpool.Pools) {
	st := p.Stats()
	for i, dst := range [bufpool.Tiers]*PoolOperationStats{
		&m.PoolStats.IdentityPool, &m.PoolStats.SmallPool, &m.PoolStats.MediumPool, &m.PoolStats.LargePool,
	} {
		*dst = PoolOperationStats{Gets: st[i].Gets, Puts: st[i].Puts, Misses: st[i].Misses, InUse: st[i].InUse}
	}
	m.MemoryStats.CurrentAllocatedBytes = p.InUseBytes()
}

// ReadRuntime fills m's Go heap and GC figures from runtime/metrics, which,
// unlike runtime.ReadMemStats, does not stop the world. The GC pause
// average is estimated from the pause histogram's bucket midpoints.
func ReadRuntime(m *DetailedMemoryPoolMetrics) {
	samples := []rtmetrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/cycles/total:gc-cycles"},
		{Name: "/sched/pauses/total/gc:seconds"},
	}
	rtmetrics.Read(samples)
	if v := samples[0].Value; v.Kind() == rtmetrics.KindUint64 {
		m.MemoryStats.RuntimeAllocBytes = v.Uint64()
	}
	if v := samples[1].Value; v.Kind() == rtmetrics.KindUint64 {
		m.GCStats.GCRuns = uint32(v.Uint64())
	}
	if v := samples[2].Value; v.Kind() == rtmetrics.KindFloat64Histogram {
		m.GCStats.GCPauseAvgNs = histogramMeanNs(v.Float64Histogram())
	}
}

// histogramMeanNs is the mean of h (in seconds) in nanoseconds, each count
// taken at its bucket's midpoint; a bucket open below starts at 0, one open
// above counts at its lower bound. 0 for an empty histogram.
func histogramMeanNs(h *rtmetrics.Float64Histogram) uint64 {
	var n uint64
	var sum float64
	for i, c := range h.Counts {
		if c == 0 {
			continue
		}
		lo, hi := h.Buckets[i], h.Buckets[i+1]
		if math.IsInf(lo, -1) {
			lo = 0
		}
		if math.IsInf(hi, 1) {
			hi = lo
		}
		n += c
		sum += float64(c) * (lo + hi) / 2
	}
	if n == 0 {
		return 0
	}
	return uint64(sum / float64(n) * 1e9)
}
