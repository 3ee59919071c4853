// Package upstream is a protocol's set of backend targets: parsing, load
// balancing, passive health (a failed dial skips the target for a back-off)
// and PROXY protocol headers towards the backend.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/darkit/protoplex/internal/proxyproto"
)

// Target is one backend address with its weight (default 1): "host:port",
// or "unix:/path" for a Unix stream socket.
type Target struct {
	Addr   string
	Weight int
}

// MaxTargets bounds a set's targets: each may run a health checker and a
// pool refiller of its own.
const MaxTargets = 1024

// ParseTargets reads "a:1,b:2" specs; "host:port;w=3" sets a weight;
// "unix:/run/app.sock" is a Unix stream socket (an absolute path that fits
// sun_path, see CheckUnixPath). At most MaxTargets in all.
func ParseTargets(specs []string) ([]Target, error) {
	var out []Target
	for _, spec := range specs {
		for t := range strings.SplitSeq(spec, ",") {
			t = strings.TrimSpace(t)
			if t == "" {
				continue
			}
			if len(out) == MaxTargets {
				return nil, fmt.Errorf("too many targets: at most %d", MaxTargets)
			}
			tg := Target{Weight: 1}
			addr, opts, _ := strings.Cut(t, ";")
			if opts != "" {
				w, ok := strings.CutPrefix(opts, "w=")
				n, err := strconv.Atoi(w)
				if !ok || err != nil || n < 1 || n > 1000 {
					return nil, fmt.Errorf("target %q: weight must be w=1..1000", t)
				}
				tg.Weight = n
			}
			if path, ok := strings.CutPrefix(addr, UnixPrefix); ok {
				if err := CheckUnixPath(path); err != nil {
					return nil, fmt.Errorf("target %q: %w", t, err)
				}
				tg.Addr = addr
				out = append(out, tg)
				continue
			}
			host, port, err := net.SplitHostPort(addr)
			if err != nil || host == "" {
				return nil, fmt.Errorf("target %q: want host:port", t)
			}
			if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
				return nil, fmt.Errorf("target %q: invalid port %q", t, port)
			}
			tg.Addr = addr
			out = append(out, tg)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no target")
	}
	return out, nil
}

// Strategies, as written in YAML.
const (
	RoundRobin         = "round_robin"
	WeightedRoundRobin = "weighted_round_robin"
	LeastConnections   = "least_connections"
	Random             = "random"
	First              = "first"
)

// ValidStrategy reports whether s names a strategy ("" = round_robin).
func ValidStrategy(s string) bool {
	switch s {
	case "", RoundRobin, WeightedRoundRobin, LeastConnections, Random, First:
		return true
	}
	return false
}

// Options of a Set.
type Options struct {
	Strategy  string
	SendProxy string // "", "v1", "v2"
	// DialDone observes every dial (metrics).
	DialDone func(target string, d time.Duration, err error)
	// StateChange observes active health check transitions.
	StateChange func(target string, up bool)
	Health      HealthCheck
	Pool        Pool
	// Source addresses backend connections are dialed from, in turn (see
	// ParseSource); empty lets the kernel choose.
	Source []netip.Addr
	// Transparent dials each client's backend connection from the client's
	// own IP address (see dialTransparent); health probes still dial from
	// this host's address.
	Transparent bool
}

// Set is safe for concurrent use.
type Set struct {
	opt     Options
	targets []*target
	byAddr  map[string]*target // the first target of each address; read-only after New
	dialer  net.Dialer
	// now is the clock of back-offs and pool ages: time.Now, or a test's
	// fake set before the set is used.
	now func() time.Time

	rr      atomic.Uint64
	srcNext atomic.Uint64 // next Options.Source
	mu      sync.Mutex    // smooth weighted round-robin state
	created atomic.Int64
	reused  atomic.Int64
	checks  atomic.Int64

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type target struct {
	Target
	downUntil atomic.Int64 // unix nanos; 0 = up
	failures  atomic.Int32
	active    atomic.Int64
	current   int            // smooth WRR, under Set.mu
	ip        netip.AddrPort // Addr parsed once when it is an IP literal
	unix      string         // the socket path of a "unix:" target

	done func() // release, made once: handing it out allocates nothing

	health *health       // nil without active checks
	pool   chan pooled   // nil without a warm pool
	refill chan struct{} // a pooled conn was taken

	admin    atomic.Uint32 // an Admin: what an operator holds the target in
	since    atomic.Int64  // unix nanos of the last change of up, down or Admin
	served   atomic.Int64  // connections dialed or taken from the pool for clients
	dialErrs atomic.Int64  // failed dials for clients
	bytesUp  atomic.Int64  // forwarded client → backend, by connections ended
	bytesDn  atomic.Int64  // forwarded backend → client
}

// Admin is the state an operator holds a target in (the status page's
// actions). A target held in Drain or Maint is never offered by a Plan, so
// it gets no new connection; the connections it has keep running. Maint
// also pauses its active health checks.
type Admin uint8

// Operator states.
const (
	Ready Admin = iota // no hold: the target serves as its health says
	Drain
	Maint
)

func (a Admin) String() string { return [...]string{"ready", "drain", "maint"}[a] }

// ParseAdmin reads "ready", "drain" or "maint".
func ParseAdmin(s string) (Admin, bool) {
	for a := Ready; a <= Maint; a++ {
		if s == a.String() {
			return a, true
		}
	}
	return Ready, false
}

// Status of one target.
type Status struct {
	Addr   string
	Weight int
	Up     bool
	Active int64

	Admin      Admin
	Since      time.Time // the last change of Up or Admin (or when the set was built)
	Served     int64     // connections given to clients, in total
	DialErrors int64     // failed dials for clients, in total
	BytesUp    int64     // forwarded client → backend by connections ended (Forwarded)
	BytesDown  int64     // forwarded backend → client
	Check      CheckResult
}

// CheckResult is a target's last active health check; At is zero before the
// first one, or without active checks.
type CheckResult struct {
	At       time.Time
	Duration time.Duration
	Err      string // "" when the check passed
}

// ErrNoTarget is the dial error of a set without targets: a protocol whose
// targets all come from etcd discovery, before one registers.
var ErrNoTarget = errors.New("no target")

// New returns a set over targets. A set may have none (ErrNoTarget on
// every dial).
func New(targets []Target, opt Options) (*Set, error) {
	if len(targets) > MaxTargets {
		return nil, fmt.Errorf("%d targets: at most %d", len(targets), MaxTargets)
	}
	if !ValidStrategy(opt.Strategy) {
		return nil, fmt.Errorf("unknown balance strategy %q", opt.Strategy)
	}
	if opt.SendProxy != "" && opt.SendProxy != "v1" && opt.SendProxy != "v2" {
		return nil, fmt.Errorf("send_proxy %q: want v1 or v2", opt.SendProxy)
	}
	if opt.Pool.MinIdle < 0 || opt.Pool.MinIdle > MaxPoolIdle {
		return nil, fmt.Errorf("pool min_idle %d: want 0..%d", opt.Pool.MinIdle, MaxPoolIdle)
	}
	switch opt.Health.Check {
	case "", "tcp", "redis", "http", "dns":
	default:
		return nil, fmt.Errorf("unknown health check %q", opt.Health.Check)
	}
	if err := checkSource(opt.Source); err != nil {
		return nil, err
	}
	if err := checkTransparent(opt); err != nil {
		return nil, err
	}
	// No TCP keepalive towards backends: they are near, and the setsockopt
	// calls it costs per dial are measurable per connection.
	s := &Set{opt: opt, dialer: net.Dialer{KeepAlive: -1}, now: time.Now}
	if len(opt.Source) > 0 {
		s.dialer.Control = bindAddressNoPort
	}
	for _, t := range targets {
		if path, ok := strings.CutPrefix(t.Addr, UnixPrefix); ok {
			if err := CheckUnixPath(path); err != nil {
				return nil, fmt.Errorf("target %s: %w", t.Addr, err)
			}
			if len(opt.Source) > 0 || opt.Transparent {
				return nil, fmt.Errorf("target %s: a Unix socket has no source address (source, transparent)", t.Addr)
			}
			s.add(&target{Target: t, unix: path})
			continue
		}
		ip, _ := netip.ParseAddrPort(t.Addr) // invalid for host names: those resolve per dial
		ip = netip.AddrPortFrom(ip.Addr().Unmap(), ip.Port())
		if ip.IsValid() && len(opt.Source) > 0 && ip.Addr().Is4() != opt.Source[0].Is4() {
			return nil, fmt.Errorf("target %s: source addresses are of the other address family", t.Addr)
		}
		s.add(&target{Target: t, ip: ip})
	}
	return s, nil
}

// add appends t to the set's targets.
func (s *Set) add(t *target) {
	t.refill = make(chan struct{}, 1)
	t.done = t.release
	t.since.Store(s.now().UnixNano())
	s.targets = append(s.targets, t)
	if s.byAddr == nil {
		s.byAddr = map[string]*target{}
	}
	if _, ok := s.byAddr[t.Addr]; !ok {
		s.byAddr[t.Addr] = t
	}
}

// Forwarded counts the bytes a connection to target (Attempt.Target)
// moved each way, when it ends: the status page's per-target rates.
func (s *Set) Forwarded(target string, up, down int64) {
	if t := s.byAddr[target]; t != nil {
		t.bytesUp.Add(up)
		t.bytesDn.Add(down)
	}
}

// Adopt counts one more active connection to target (as configured)
// that another process dialed (an upgrade moved it here), for
// least-connections; release is to be called once when it ends, and is
// nil when the set has no such target any more.
func (s *Set) Adopt(target string) (release func()) {
	t := s.byAddr[target]
	if t == nil {
		return nil
	}
	t.active.Add(1)
	return t.done
}

// SetAdmin holds the target addr (as configured) in a, or releases it
// (Ready); false when the set has no such target.
func (s *Set) SetAdmin(addr string, a Admin) bool {
	found := false
	for _, t := range s.targets {
		if t.Addr == addr {
			if Admin(t.admin.Swap(uint32(a))) != a {
				t.since.Store(s.now().UnixNano())
			}
			found = true
		}
	}
	return found
}

// Created counts backend connections dialed (for clients or the pool).
func (s *Set) Created() int64 { return s.created.Load() }

// Reused counts clients served with a pre-dialed pool connection.
func (s *Set) Reused() int64 { return s.reused.Load() }

// HealthChecks counts active probes run.
func (s *Set) HealthChecks() int64 { return s.checks.Load() }

// Idle counts pooled connections waiting.
func (s *Set) Idle() int64 {
	n := 0
	for _, t := range s.targets {
		n += len(t.pool)
	}
	return int64(n)
}

// isUp: an actively checked target follows its checks; otherwise the
// passive back-off decides.
func (t *target) isUp(now int64) bool {
	if h := t.health; h != nil {
		h.mu.Lock()
		up := h.up
		h.mu.Unlock()
		if !up {
			return false
		}
	}
	return t.downUntil.Load() <= now
}

// eligible: up, and not held out by an operator.
func (t *target) eligible(now int64) bool { return t.admin.Load() == uint32(Ready) && t.isUp(now) }

// Status reports every target.
func (s *Set) Status() []Status {
	now := s.now().UnixNano()
	out := make([]Status, len(s.targets))
	for i, t := range s.targets {
		since := t.since.Load()
		if du := t.downUntil.Load(); du != 0 && du <= now && du > since {
			since = du // a dial back-off that ran out: up again since then
		}
		out[i] = Status{Addr: t.Addr, Weight: t.Weight, Up: t.isUp(now), Active: t.active.Load(),
			Admin: Admin(t.admin.Load()), Since: time.Unix(0, since), Served: t.served.Load(), DialErrors: t.dialErrs.Load(),
			BytesUp: t.bytesUp.Load(), BytesDown: t.bytesDn.Load()}
		if h := t.health; h != nil {
			h.mu.Lock()
			out[i].Check = h.last
			h.mu.Unlock()
		}
	}
	return out
}

// pick returns the index in s.targets of the target the strategy tries
// first; the others follow in their configured order. A strategy finding
// no target up (and first) picks the first target.
func (s *Set) pick(now int64) int {
	n := len(s.targets)
	if n <= 1 {
		return 0
	}
	up := func(j int) bool { return s.targets[j].eligible(now) }
	first := -1
	switch s.opt.Strategy {
	case First:
		return 0
	case WeightedRoundRobin:
		// nginx's smooth weighted round-robin over the targets that are up.
		s.mu.Lock()
		total := 0
		for j, t := range s.targets {
			if !up(j) {
				continue
			}
			t.current += t.Weight
			total += t.Weight
			if first < 0 || t.current > s.targets[first].current {
				first = j
			}
		}
		if first >= 0 {
			s.targets[first].current -= total
		}
		s.mu.Unlock()
	case LeastConnections:
		for j, t := range s.targets {
			if up(j) && (first < 0 || t.active.Load() < s.targets[first].active.Load()) {
				first = j
			}
		}
	case Random:
		// Power of two choices: two random targets, the less loaded wins.
		a, b := rand.IntN(n), rand.IntN(n)
		if !up(a) || (up(b) && s.targets[b].active.Load() < s.targets[a].active.Load()) {
			a = b
		}
		first = a
	default:
		first = int(s.rr.Add(1)-1) % n
	}
	return max(first, 0)
}

// Dial connects to a target chosen by the strategy, within ctx's deadline
// (the manager's dial_timeout), trying the targets of a Plan in turn: each
// at most once per call, the targets that are up first, in strategy order,
// then those in back-off, so a set whose targets are all down still dials
// each of them once rather than fail blind. A failed attempt marks its target
// down (skipped for a back-off of 1 s doubling to 32 s) and is reported once
// to DialDone. client and local are written in a PROXY header when the set
// sends one. done must be called when the connection ends.
func (s *Set) Dial(ctx context.Context, client, local net.Addr) (net.Conn, string, func(), error) {
	p := s.Plan()
	var lastErr error
	for {
		if ctx.Err() != nil {
			if lastErr == nil {
				lastErr = ctx.Err()
			}
			return nil, "", nil, lastErr
		}
		begin := time.Now()
		a, ok := p.Next()
		if !ok {
			if lastErr == nil {
				lastErr = ErrNoTarget
			}
			return nil, "", nil, lastErr
		}
		c, err := p.Dial(ctx, a, client)
		if err == nil && s.opt.SendProxy != "" {
			if _, werr := c.Write(s.ProxyHeader(client, local)); werr != nil {
				c.Close()
				err = werr
			}
		}
		if done := p.Done(a, time.Since(begin), err); err == nil {
			return c, a.Target, done, nil
		}
		lastErr = err
	}
}

// dial connects to t for client: from client's IP address when the set is
// transparent and client is known, from the next source address when the
// set has any. Health probes and the pool dial with a nil client.
//
// Without a source the socket is not bound before connect(): the kernel
// then picks the local port unique per 4-tuple only and may reuse one in
// TIME_WAIT (tcp_tw_reuse). Dialer.DialTCP always binds (a zero laddr is
// bind(0.0.0.0:0)), which takes a port no other socket holds at all, so the
// TIME_WAIT sockets towards one backend would exhaust the whole ephemeral
// range for every backend. With a source, bindAddressNoPort keeps the port
// choice at connect() the same way.
func (s *Set) dial(ctx context.Context, t *target, client net.Addr) (net.Conn, error) {
	if t.unix != "" {
		return s.dialer.DialContext(ctx, "unix", t.unix)
	}
	if s.opt.Transparent && client != nil {
		return s.dialTransparent(ctx, t, client)
	}
	n := len(s.opt.Source)
	if n == 0 {
		return s.dialer.DialContext(ctx, "tcp", t.Addr)
	}
	src := s.opt.Source[int((s.srcNext.Add(1)-1)%uint64(n))]
	return s.dialFrom(ctx, s.dialer, t, src)
}

// dialFrom dials t from src with d, whose Control binds without a port.
func (s *Set) dialFrom(ctx context.Context, d net.Dialer, t *target, src netip.Addr) (net.Conn, error) {
	if !t.ip.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()} // the resolver keeps only addresses of its family
		return d.DialContext(ctx, "tcp", t.Addr)
	}
	c, err := d.DialTCP(ctx, "tcp", netip.AddrPortFrom(src, 0), t.ip)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return c, nil
}

// backoff is how long a target is skipped after its failures-th failed
// dial in a row: 1 s, doubling up to 32 s.
func backoff(failures int32) time.Duration { return time.Second << min(failures-1, 5) }

func (t *target) release() { t.active.Add(-1) }

// proxyHeader returns the PROXY protocol header (version "v1" text or "v2"
// binary) that tells a backend the client and the local address it
// connected to; without both, a v1 UNKNOWN or v2 LOCAL header.
func proxyHeader(version string, client, local net.Addr) []byte {
	h := proxyproto.Header{Source: addrPort(client), Dest: addrPort(local)}
	if version == "v1" {
		return proxyproto.AppendV1(make([]byte, 0, proxyproto.MaxV1Len), h)
	}
	return proxyproto.AppendV2(make([]byte, 0, 52), h) // 52: the v2 header of two IPv6 addresses
}

// addrPort is a's IP and port, invalid when a carries none.
func addrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case nil:
		return netip.AddrPort{}
	case *net.TCPAddr:
		return a.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}
