// Package guard decides, per source address, whether a new connection may
// proceed: allow/deny lists, per-IP token buckets and concurrency caps, and a
// DDoS guard that bans sources whose connections keep failing to identify.
package guard

import (
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/darkit/protoplex/internal/ilist"
)

// Config of a Guard. Zero values disable a feature.
type Config struct {
	Whitelist, Blacklist []string // exact IPs or CIDRs, IPv4 or IPv6

	EnableRateLimit   bool
	RequestsPerSecond float64 // new connections per second per source IP
	BurstSize         int

	MaxConnectionsPerIP int // concurrent, 0 = unlimited

	EnableDDoSGuard  bool
	FailureThreshold int           // failed identifications within Window (default 20)
	Window           time.Duration // default 10s
	BanDuration      time.Duration // first ban (default 10s), doubled on each repeat
	MaxBanDuration   time.Duration // default 10m
}

func (c *Config) defaults() {
	if c.FailureThreshold <= 0 {
		c.FailureThreshold = 20
	}
	if c.Window <= 0 {
		c.Window = 10 * time.Second
	}
	if c.BanDuration <= 0 {
		c.BanDuration = 10 * time.Second
	}
	if c.MaxBanDuration <= 0 {
		c.MaxBanDuration = 10 * time.Minute
	}
	if c.BurstSize <= 0 {
		c.BurstSize = max(1, int(c.RequestsPerSecond))
	}
}

func (c *Config) perIP() bool {
	return c.EnableRateLimit || c.MaxConnectionsPerIP > 0 || c.EnableDDoSGuard
}

// Reason is the outcome of Admit; String is the metric label.
type Reason uint8

const (
	Allowed Reason = iota
	Blacklisted
	RateLimited
	PerIPLimit
	Banned
	// GuardFull: the source is not tracked yet and its shard of the table
	// holds only sources with open connections, so nothing can be evicted.
	// Admitting it untracked would exempt it from every per-source limit.
	GuardFull
)

func (r Reason) String() string {
	return [...]string{"allowed", "blacklist", "rate_limit", "per_ip_limit", "ddos_ban", "guard_full"}[r]
}

// Metrics count admissions and refusals (the public SecurityMetrics).
type Metrics struct {
	TotalConnections    int64 `json:"total_connections"`
	RateLimitedRequests int64 `json:"rate_limited_requests"`
	BlockedConnections  int64 `json:"blocked_connections"`
	WhitelistedAccess   int64 `json:"whitelisted_access"`
	BlacklistedDenied   int64 `json:"blacklisted_denied"`
	DDoSAttacks         int64 `json:"ddos_attacks"`
	EvictedSources      int64 `json:"evicted_sources"`    // idle state dropped to make room
	GuardFullRefused    int64 `json:"guard_full_refused"` // refused: table full of busy sources
}

const (
	shards = 64
	// defaultShardCapacity bounds per-source state under a flood of distinct
	// sources: 64 shards of 16,384 entries, 1,048,576 sources in all.
	defaultShardCapacity = 1 << 14
	idleTTL              = time.Minute
	// ipv6TrackBits: IPv6 sources are tracked per /64, the block one host
	// or one subscriber normally owns, so an attacker holding a /64 counts
	// as one source instead of 2^64.
	ipv6TrackBits = 64
	// maxRemoteBan bounds a ban learnt from another node.
	maxRemoteBan = MaxBanDuration
)

// Guard is safe for concurrent use.
type Guard struct {
	state atomic.Pointer[state]
	now   func() time.Time
	log   *RateLimitedLogger
	onBan atomic.Pointer[func(netip.Addr, time.Duration)]

	seed          maphash.Seed
	shardCapacity int // fixed after New; tests shrink it
	shards        [shards]shard
	entries       atomic.Int64

	total, rateLimited, blocked, whitelisted, blacklisted, bans, evicted, full atomic.Int64

	stop chan struct{}
	done chan struct{}
}

type state struct {
	cfg          Config
	white, black *ipSet
}

type shard struct {
	mu   sync.Mutex
	m    map[netip.Addr]*entry
	idle ilist.List[entry] // the entries with active == 0, most recently seen first
}

type entry struct {
	key         netip.Addr
	idleLinks   ilist.Links[entry] // its place in shard.idle while active == 0
	limiter     *rate.Limiter
	active      int
	failures    int
	windowStart time.Time
	bannedUntil time.Time
	bans        int
	lastSeen    time.Time
	banReason   BanReason // why bannedUntil was last set
}

// Ticket is what Admit counted for one connection. Release undoes exactly
// that, whatever the configuration has become in between, so the per-source
// count balances across any sequence of reloads.
type Ticket struct {
	sh          *shard
	e           *entry // nil: nothing was counted
	whitelisted bool
}

// Whitelisted reports whether the source matched the whitelist.
func (t Ticket) Whitelisted() bool { return t.whitelisted }

// New returns a Guard; an invalid list entry is named in the error. now may
// be nil (time.Now). The janitor evicting idle state runs until Close.
func New(cfg Config, log *slog.Logger, now func() time.Time) (*Guard, error) {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	g := &Guard{now: now, log: NewRateLimitedLogger(log, 10, now), seed: maphash.MakeSeed(),
		shardCapacity: defaultShardCapacity, stop: make(chan struct{}), done: make(chan struct{})}
	for i := range g.shards {
		g.shards[i].m = make(map[netip.Addr]*entry)
		g.shards[i].idle = ilist.New(idleLinksOf)
	}
	if err := g.Update(cfg); err != nil {
		return nil, err
	}
	go g.janitor()
	return g, nil
}

// Update swaps lists and limits atomically; per-IP state is kept. It rejects
// exactly what Validate rejects, and on error nothing changes.
func (g *Guard) Update(cfg Config) error {
	st, err := compile(cfg)
	if err != nil {
		return err
	}
	g.state.Store(st)
	return nil
}

// SetOnBan registers fn, called (outside locks) for every ban the DDoS guard
// issues, e.g. to share it with other nodes.
func (g *Guard) SetOnBan(fn func(ip netip.Addr, d time.Duration)) { g.onBan.Store(&fn) }

// AddrOf returns the unmapped IP of a connection's address.
func AddrOf(a net.Addr) netip.Addr {
	switch v := a.(type) {
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(v.IP)
		return ip.Unmap()
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(v.IP)
		return ip.Unmap()
	}
	if a == nil {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// trackKey is the unit per-source state is kept for: the address for IPv4,
// its /64 for IPv6.
func trackKey(ip netip.Addr) netip.Addr {
	if ip.Is6() && !ip.Is4In6() {
		if p, err := ip.WithZone("").Prefix(ipv6TrackBits); err == nil {
			return p.Addr()
		}
	}
	return ip
}

// Admit decides on a new connection from ip. On Allowed the caller must call
// Release with the ticket, once, when the connection ends.
func (g *Guard) Admit(ip netip.Addr) (Ticket, Reason) {
	g.total.Add(1)
	st := g.state.Load()
	ip = ip.Unmap()
	if st.black.contains(ip) {
		g.blacklisted.Add(1)
		g.refused(Blacklisted, ip)
		return Ticket{}, Blacklisted
	}
	if st.white.contains(ip) {
		g.whitelisted.Add(1)
		return Ticket{whitelisted: true}, Allowed
	}
	if !st.cfg.perIP() {
		return Ticket{}, Allowed
	}
	now := g.now()
	sh, e := g.lockEntry(trackKey(ip))
	if e == nil {
		sh.mu.Unlock()
		g.full.Add(1)
		g.refused(GuardFull, ip)
		return Ticket{}, GuardFull
	}
	sh.touch(e, now)
	var t Ticket
	r := Allowed
	switch {
	case now.Before(e.bannedUntil):
		r = Banned
	case st.cfg.EnableRateLimit && !e.allow(st.cfg, now):
		r = RateLimited
	case st.cfg.MaxConnectionsPerIP > 0 && e.active >= st.cfg.MaxConnectionsPerIP:
		r = PerIPLimit
	default:
		if e.active == 0 {
			sh.idle.Remove(e)
		}
		e.active++
		t = Ticket{sh: sh, e: e}
	}
	sh.mu.Unlock()
	if r != Allowed {
		if r == RateLimited {
			g.rateLimited.Add(1)
		}
		g.refused(r, ip)
	}
	return t, r
}

// Adopt counts a connection from ip that another process admitted (an
// upgrade moved it here): the per-source count takes it, whatever the
// limits and bans say, as it is established already. Release it as one
// Admit gave. A full table counts nothing.
func (g *Guard) Adopt(ip netip.Addr) Ticket {
	st := g.state.Load()
	ip = ip.Unmap()
	if st.white.contains(ip) {
		return Ticket{whitelisted: true}
	}
	if !st.cfg.perIP() || !ip.IsValid() {
		return Ticket{}
	}
	sh, e := g.lockEntry(trackKey(ip))
	if e == nil {
		sh.mu.Unlock()
		return Ticket{}
	}
	sh.touch(e, g.now())
	if e.active == 0 {
		sh.idle.Remove(e)
	}
	e.active++
	sh.mu.Unlock()
	return Ticket{sh: sh, e: e}
}

func (e *entry) allow(cfg Config, now time.Time) bool {
	lim := rate.Limit(cfg.RequestsPerSecond)
	if e.limiter == nil {
		e.limiter = rate.NewLimiter(lim, cfg.BurstSize)
	} else if e.limiter.Limit() != lim || e.limiter.Burst() != cfg.BurstSize {
		e.limiter.SetLimitAt(now, lim)
		e.limiter.SetBurstAt(now, cfg.BurstSize)
	}
	return e.limiter.AllowN(now, 1)
}

func (g *Guard) refused(r Reason, ip netip.Addr) {
	g.blocked.Add(1)
	g.log.Warn("connection refused", "reason", r.String(), "source", ip.String())
}

// Release ends a connection admitted by Admit. It ignores the current
// configuration: what Admit counted is uncounted.
func (g *Guard) Release(t Ticket) {
	if t.e == nil {
		return
	}
	now := g.now()
	t.sh.mu.Lock()
	if e := t.e; e.active > 0 {
		e.active--
		e.lastSeen = now
		if e.active == 0 {
			t.sh.idle.PushFront(e)
		}
	}
	t.sh.mu.Unlock()
}

// IdentifyFailed records a connection from ip that never identified (garbage,
// timeout). FailureThreshold of them within Window ban ip, each repeat ban
// twice as long, up to MaxBanDuration.
func (g *Guard) IdentifyFailed(ip netip.Addr) {
	st := g.state.Load()
	if !st.cfg.EnableDDoSGuard {
		return
	}
	ip = ip.Unmap()
	if st.white.contains(ip) {
		return
	}
	now, key := g.now(), trackKey(ip)
	sh, e := g.lockEntry(key)
	if e == nil {
		sh.mu.Unlock()
		return
	}
	sh.touch(e, now)
	if now.Sub(e.windowStart) > st.cfg.Window {
		e.windowStart, e.failures = now, 0
	}
	e.failures++
	var ban time.Duration
	if e.failures >= st.cfg.FailureThreshold && !now.Before(e.bannedUntil) {
		// Doubling stops at the cap, so it cannot overflow.
		ban = min(st.cfg.BanDuration, st.cfg.MaxBanDuration)
		for i := 0; i < e.bans && ban < st.cfg.MaxBanDuration; i++ {
			ban = min(2*ban, st.cfg.MaxBanDuration)
		}
		e.bans++
		e.failures = 0
		e.bannedUntil = now.Add(ban)
	}
	sh.mu.Unlock()
	if ban > 0 {
		g.bans.Add(1)
		g.log.Warn("source banned: connections keep failing identification", "source", key.String(), "duration", ban)
		if fn := g.onBan.Load(); fn != nil {
			(*fn)(key, ban)
		}
	}
}

// Ban bans ip (for IPv6, its /64) for d, a ban learnt from another node; d is
// capped at 30 days. When ip's shard is full of busy sources the ban is
// dropped, as the table stays bounded.
func (g *Guard) Ban(ip netip.Addr, d time.Duration) {
	if d <= 0 {
		return
	}
	d = min(d, maxRemoteBan)
	now := g.now()
	key := trackKey(ip.Unmap())
	sh, e := g.lockEntry(key)
	if e != nil {
		sh.touch(e, now)
		if until := now.Add(d); until.After(e.bannedUntil) {
			e.bannedUntil = until
			e.banReason = BanRemote
		}
	}
	sh.mu.Unlock()
	if e == nil {
		g.log.Warn("remote ban dropped: source table full", "source", key.String())
	}
}

// Unban lifts the ban of ip (for IPv6, its /64), whatever issued it; it
// reports whether a ban was in force. The source's record of earlier bans
// stays, so a repeat offender's next ban is still longer.
func (g *Guard) Unban(ip netip.Addr) bool {
	key := trackKey(ip.Unmap())
	sh := g.shardOf(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[key]
	if e == nil || !g.now().Before(e.bannedUntil) {
		return false
	}
	e.bannedUntil, e.failures = time.Time{}, 0
	return true
}

// BanReason says what issued a ban.
type BanReason uint8

// Ban reasons.
const (
	BanIdentifyFailures BanReason = iota // the DDoS guard: connections kept failing identification
	BanRemote                            // Ban: another node of the cluster, or the API
)

func (r BanReason) String() string { return [...]string{"identify_failures", "remote"}[r] }

// BanInfo is one source banned now.
type BanInfo struct {
	Source    netip.Addr // the address, or an IPv6 /64's first address
	Reason    BanReason
	Remaining time.Duration
}

// SourceInfo is one tracked source and its open connections.
type SourceInfo struct {
	Source      netip.Addr
	Connections int
}

// Bans returns the sources banned now, at most max of them, those banned
// the longest first; and how many are banned in all. It visits every
// tracked source (at most the table's 1,048,576): for a status page, not
// the connection path.
func (g *Guard) Bans(max int) ([]BanInfo, int) {
	now := g.now()
	var out []BanInfo
	total := 0
	g.each(func(e *entry) {
		if !now.Before(e.bannedUntil) {
			return
		}
		total++
		out = keepTop(out, BanInfo{Source: e.key, Reason: e.banReason, Remaining: e.bannedUntil.Sub(now)}, max,
			func(a, b BanInfo) bool {
				return a.Remaining > b.Remaining || (a.Remaining == b.Remaining && a.Source.Less(b.Source))
			})
	})
	return out, total
}

// TopSources returns at most n sources with the most open connections,
// most first; sources with none are left out. Like Bans, it visits every
// tracked source.
func (g *Guard) TopSources(n int) []SourceInfo {
	var out []SourceInfo
	g.each(func(e *entry) {
		if e.active > 0 {
			out = keepTop(out, SourceInfo{Source: e.key, Connections: e.active}, n,
				func(a, b SourceInfo) bool {
					return a.Connections > b.Connections || (a.Connections == b.Connections && a.Source.Less(b.Source))
				})
		}
	})
	return out
}

// each calls fn for every tracked source, one shard locked at a time.
func (g *Guard) each(fn func(*entry)) {
	for i := range g.shards {
		sh := &g.shards[i]
		sh.mu.Lock()
		for _, e := range sh.m {
			fn(e)
		}
		sh.mu.Unlock()
	}
}

// keepTop inserts v into top, kept sorted by before and at most n long.
func keepTop[T any](top []T, v T, n int, before func(a, b T) bool) []T {
	if n <= 0 || (len(top) == n && !before(v, top[n-1])) {
		return top
	}
	i := len(top)
	for i > 0 && before(v, top[i-1]) {
		i--
	}
	if len(top) < n {
		top = append(top, v)
	}
	copy(top[i+1:], top[i:len(top)-1])
	top[i] = v
	return top
}

// lockEntry locks key's shard and returns it with key's state there, as
// entry does; the caller unlocks the shard.
func (g *Guard) lockEntry(key netip.Addr) (*shard, *entry) {
	sh := g.shardOf(key)
	sh.mu.Lock()
	return sh, g.entry(sh, key)
}

// entry returns key's state in sh (locked by the caller), creating it. When
// sh is full it evicts the least recently seen source without open
// connections; when every source in sh has one it returns nil.
func (g *Guard) entry(sh *shard, key netip.Addr) *entry {
	if e := sh.m[key]; e != nil {
		return e
	}
	if len(sh.m) >= g.shardCapacity {
		victim := sh.idle.Back()
		if victim == nil {
			return nil
		}
		sh.idle.Remove(victim)
		delete(sh.m, victim.key)
		g.entries.Add(-1)
		g.evicted.Add(1)
	}
	e := &entry{key: key}
	sh.m[key] = e
	sh.idle.PushFront(e)
	g.entries.Add(1)
	return e
}

// touch records that e was seen now, keeping sh.idle in recency order.
func (sh *shard) touch(e *entry, now time.Time) {
	e.lastSeen = now
	if e.active == 0 {
		sh.idle.Remove(e)
		sh.idle.PushFront(e)
	}
}

func idleLinksOf(e *entry) *ilist.Links[entry] { return &e.idleLinks }

// Metrics returns the counters.
func (g *Guard) Metrics() Metrics {
	return Metrics{
		TotalConnections:    g.total.Load(),
		RateLimitedRequests: g.rateLimited.Load(),
		BlockedConnections:  g.blocked.Load(),
		WhitelistedAccess:   g.whitelisted.Load(),
		BlacklistedDenied:   g.blacklisted.Load(),
		DDoSAttacks:         g.bans.Load(),
		EvictedSources:      g.evicted.Load(),
		GuardFullRefused:    g.full.Load(),
	}
}

// Entries returns how many sources have per-IP state.
func (g *Guard) Entries() int64 { return g.entries.Load() }

// Sweep evicts idle per-IP state now (the janitor does it periodically).
// A source with open connections is never evicted.
func (g *Guard) Sweep() {
	now := g.now()
	maxBan := g.state.Load().cfg.MaxBanDuration
	for i := range g.shards {
		sh := &g.shards[i]
		sh.mu.Lock()
		for key, e := range sh.m {
			idle := e.active == 0 && now.Sub(e.lastSeen) > idleTTL && !now.Before(e.bannedUntil)
			// A source that was banned is remembered longer, so a repeat
			// offender's next ban is longer.
			if idle && (e.bans == 0 || now.Sub(e.bannedUntil) > maxBan) {
				sh.idle.Remove(e)
				delete(sh.m, key)
				g.entries.Add(-1)
			}
		}
		sh.mu.Unlock()
	}
}

func (g *Guard) janitor() {
	defer close(g.done)
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
			g.Sweep()
		}
	}
}

// Close stops the janitor.
func (g *Guard) Close() {
	select {
	case <-g.stop:
	default:
		close(g.stop)
	}
	<-g.done
}

// shardOf hashes with a per-process seed, so a sender cannot aim all its
// sources at one shard.
func (g *Guard) shardOf(key netip.Addr) *shard {
	b := key.As16()
	return &g.shards[maphash.Bytes(g.seed, b[:])%shards]
}

// ipSet holds exact addresses in a hash set and CIDRs in one hash set per
// prefix length present: a lookup costs at most one map probe per distinct
// length (≤ 33 for IPv4, ≤ 129 for IPv6), whatever the list size.
type ipSet struct {
	exact      map[netip.Addr]struct{}
	v4, v6     map[netip.Prefix]struct{}
	v4Lens     []int
	v6Lens     []int
	hasEntries bool
}

func newIPSet(entries []string) (*ipSet, error) {
	s := &ipSet{exact: map[netip.Addr]struct{}{}, v4: map[netip.Prefix]struct{}{}, v6: map[netip.Prefix]struct{}{}}
	var errs []error
	seen4, seen6 := map[int]bool{}, map[int]bool{}
	for _, e := range entries {
		s.hasEntries = true
		if a, err := netip.ParseAddr(e); err == nil {
			s.exact[a.Unmap()] = struct{}{}
			continue
		}
		p, err := netip.ParsePrefix(e)
		if err != nil {
			errs = append(errs, fmt.Errorf("%q is neither an IP address nor a CIDR", e))
			continue
		}
		a := p.Addr()
		bits := p.Bits()
		if a.Is4In6() && bits >= 96 {
			a, bits = a.Unmap(), bits-96
		}
		p = netip.PrefixFrom(a, bits).Masked()
		if p.Addr().Is4() {
			s.v4[p] = struct{}{}
			if !seen4[bits] {
				seen4[bits] = true
				s.v4Lens = append(s.v4Lens, bits)
			}
		} else {
			s.v6[p] = struct{}{}
			if !seen6[bits] {
				seen6[bits] = true
				s.v6Lens = append(s.v6Lens, bits)
			}
		}
	}
	return s, errors.Join(errs...)
}

func (s *ipSet) contains(ip netip.Addr) bool {
	if !s.hasEntries || !ip.IsValid() {
		return false
	}
	if _, ok := s.exact[ip]; ok {
		return true
	}
	set, lens := s.v6, s.v6Lens
	if ip.Is4() {
		set, lens = s.v4, s.v4Lens
	}
	for _, bits := range lens {
		if p, err := ip.Prefix(bits); err == nil {
			if _, ok := set[p]; ok {
				return true
			}
		}
	}
	return false
}
