// Package udp is the UDP engine: one socket per server.listen_udp address,
// a flow per client address:port, identified from its first datagrams by
// the routes' datagram detectors, then forwarded through a connected
// socket of its own to one target of its route (upstream.Plan's order and
// back-off); replies go back from the listening socket.
//
// Each listen_udp address is bound by one socket per CPU (SO_REUSEPORT on
// Linux, Options.Sockets; the kernel keeps each client address:port on
// one of them), each a listener whose flows are a flowTable (flowtable.go)
// owned by the listener's owner: it holds no lock per datagram, and the
// only state the owners share is two atomic budgets and, while a
// per-source cap is on, the per-source counts. Other goroutines (a
// host-name dial, Sweep) post work to the owner. Sockets are opened,
// written and closed outside any lock; a host-name target is resolved off
// the owner.
//
// The owner is one of two drivers of the same listener code. With
// Options.Loops (the manager's event loops, data_plane events, Linux;
// loop_linux.go) a loop owns the socket: it reads it and every upstream
// socket of its flows level-triggered from its epoll, with raw
// non-blocking system calls, replies from a duplicate of the listening
// socket, and sweeps on its timers; a flow is no goroutine, no os.File
// and no runtime poller entry. There datagrams go in batches
// (mmsg_linux.go): the listener and each upstream socket are read with
// recvmmsg, a client's datagrams from one read go up its flow's socket in
// one sendmmsg, and the replies of one round of the loop, to any clients,
// leave the listening socket in one sendmmsg before the loop waits again
// (Loop.BeforeWait), or when the batch is full; they are counted once
// sent, and a flow their last reply answered ends then. Without, a
// goroutine reads each socket and each routed flow has a goroutine reading
// its upstream socket (the portable path, and data_plane goroutines).
//
// Bounds: the flow tables hold at most Settings.MaxFlows flows in all (at
// most MaxMaxFlows; when full, the flow idle longest is evicted); each
// flow holds one upstream socket, so MaxFlows must stay below the
// process's fd limit. A source (an IPv4 address, an IPv6 /64) holds at
// most Settings.MaxFlowsPerSource flows of one listener when that is set
// (off by default: a resolver or a NAT gateway is one source with many
// ports), and the guard (allow/deny lists, rate limit, per-IP cap) admits
// each new flow. A refused or evicted flow is counted
// (protoplex_udp_refused_total, protoplex_udp_flows_expired_total) and
// logged at WARN, at most refusalLogRate lines a second. An undecided flow
// holds at most MaxDatagrams datagrams and MaxPendingBytes, and all
// undecided flows together at most MaxPendingTotal; nothing is allocated
// for a datagram no route can take. A route's udp_responses (at most
// MaxResponses) ends its flows once that many replies came back. On a
// loop, an answered flow of a DNS route (udp_responses 1) leaves its
// upstream socket to the next flow to the same target (pool_linux.go): at
// most MaxPooledSockets per listener, each closed after PoolIdle unused or
// when the table changes (a reload) or the listener stops; its flows'
// replies must answer a query the flow sent (dnskey.go: ID and question),
// at most maxFlowQueries unanswered per flow. Each listener reads into one
// 64 KiB buffer; on a loop into recvBatch slots of 64 KiB, and it holds its
// replies in a sendArena of 256 KiB, both mapped outside the Go heap (only
// the pages written are memory). Kernel buffers: each listening socket asks
// for a listenerBuffer (4 MiB) receive buffer, and the upstream socket of
// each flow of a route without udp_responses (a stream: QUIC, WireGuard)
// for a flowBuffer (4 MiB), with UDP_GRO on the loops (a backend's GSO
// train, at most 64 KiB, is one read into that same buffer and goes on to
// the client whole with UDP_SEGMENT); a request/response flow's keeps the
// kernel's defaults (upSocketFor). The kernel caps each at
// net.core.rmem_max and all UDP sockets together at net.ipv4.udp_mem; a
// buffer is a limit, charged only for what is queued. Without loops each
// routed flow has one goroutine reading its upstream socket; on unix it
// holds no buffer while it waits (it reads into a shared pool when the
// socket is readable). Idle flows are found by each owner walking
// per-timeout LRU lists every Options.Sweep, not by a timer per flow. Flows
// an upgrade moves in (move_linux.go) come within internal/handover's
// bounds (at most 253 a message; an undecided one with at most MaxDatagrams
// and MaxPendingBytes) and count in MaxFlows without being refused by it:
// the old process held them; the adoption waits at most listenerWait for
// its address's listener.
package udp

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/darkit/protoplex/internal/guard"
	"github.com/darkit/protoplex/internal/logging"
	"github.com/darkit/protoplex/internal/metrics"
	"github.com/darkit/protoplex/internal/upstream"
)

// Defaults and bounds of the flow table; internal/config checks
// server.max_udp_flows and max_udp_flows_per_source against them.
const (
	DefaultMaxFlows    = 10000
	DefaultIdleTimeout = 2 * time.Minute
	// MaxMaxFlows bounds Settings.MaxFlows: each flow holds a socket (an
	// fd) and its reader goroutine.
	MaxMaxFlows = 1 << 20
	// MaxMaxFlowsPerSource bounds Settings.MaxFlowsPerSource (0: off).
	MaxMaxFlowsPerSource = MaxMaxFlows
	// MaxPendingTotal bounds the datagrams all undecided flows hold.
	MaxPendingTotal = 4 << 20
	// refusalLogRate is how many refusal lines a second the engine writes.
	refusalLogRate = 10
	// noReplyWindow is how long a flow of a request/response route (one
	// with udp_responses) may go without any reply before its target is
	// reported silent: passive health, back-off as after a failed dial.
	noReplyWindow = 3 * time.Second
	// dialTimeout bounds resolving and connecting a host-name target.
	dialTimeout = 5 * time.Second
	// maxSockets bounds Options.Sockets.
	maxSockets = 64
	// listenerBuffer is the receive buffer asked for each listener.
	listenerBuffer = 4 << 20
	// flowBuffer is the receive buffer asked for the upstream socket of a
	// long-lived flow (upSocketFor).
	flowBuffer = 4 << 20
	// maxDatagram is the largest UDP payload.
	maxDatagram = 64 << 10
)

// Settings are what the engine runs with; a reload may change them: they
// apply from the next new flow on (a lower MaxFlows evicts down to it then).
type Settings struct {
	MaxFlows          int // 0: DefaultMaxFlows
	MaxFlowsPerSource int // 0: no per-source cap
	// IdleTimeout is server.udp_idle_timeout (0: by protocol); Follow
	// builds the table with it.
	IdleTimeout time.Duration
	AccessLog   bool
}

// Admitter is the guard's part the engine uses: Admit for each new flow,
// Release when it ends.
type Admitter interface {
	Admit(ip netip.Addr) (guard.Ticket, guard.Reason)
	Release(t guard.Ticket)
}

// Options configure an Engine. Table and Settings are called for each new
// flow, so they follow reloads.
type Options struct {
	Table    func() *Table
	Settings func() Settings
	Guard    Admitter // nil: every flow is admitted
	Stats    *metrics.UDP
	Log      *slog.Logger
	Now      func() time.Time // nil: time.Now
	// Sweep is how often each listener looks for idle flows (0: 250 ms).
	// Tests call Engine.Sweep instead.
	Sweep time.Duration
	// Sockets is how many sockets bind each address (0: one per CPU, at
	// most maxSockets; always one where SO_REUSEPORT is not used).
	Sockets int
	// Context, when it ends, closes the engine as Close does (nil: only
	// Close does).
	Context context.Context
	// Loops, when set and it returns loops, runs each address's sockets on
	// event loops (Linux): no goroutine per listener or per flow.
	Loops Loops
	// Resolver resolves a host-name target, off the owner (nil:
	// net.DefaultResolver); a flow goes to its first address, as a dial
	// would.
	Resolver Resolver
}

// Resolver is what the engine asks for a host name's addresses:
// *net.Resolver, or a test's stub.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Engine serves UDP listeners and their flows.
type Engine struct {
	opt    Options
	now    func() time.Time
	period time.Duration
	refLog *guard.RateLimitedLogger // refusals and evictions, rate-limited
	seed   maphash.Seed             // of the DNS query guard's hashes (dnskey.go)

	// What every listener's flow table shares.
	count, pending budget
	sources        *sources

	dialCtx    context.Context // ends host-name dials at Close
	cancelDial context.CancelFunc

	mu     sync.Mutex  // guards lns, closed and held: listeners, never datagrams
	lns    []*listener // every socket; the first of each address is primary
	closed bool
	// holding: listeners start unread, in held, until Release (hold.go).
	holding bool
	held    []*listener
	grown   chan struct{} // closed, and replaced, when lns grows

	wg       sync.WaitGroup // owners, reply readers and dials
	stopCtx  func() bool    // unhooks Options.Context
	shutOnce sync.Once
}

// routeState is what the engine keeps per route of a table.
type routeState struct {
	m *metrics.UDPRoute
	// responses ends a flow once that many datagrams came back (0: never).
	responses int
	// pool: the route's answered flows leave their upstream socket to the
	// next flow to the same target (on a loop), and its replies are checked
	// by the flows' query guard: DNS with udp_responses 1.
	pool bool
	tb   *Table // the table the route is in

	setOnce sync.Once
	set     *upstream.Set // the route's targets: its routing entry's, else built from Targets
	setErr  error
}

// backend is r's set of targets: the routing entry's (TableOf), else one
// built once from r.Targets.
func (rs *routeState) backend(r *Route) (*upstream.Set, error) {
	rs.setOnce.Do(func() {
		if rs.set != nil {
			return
		}
		targets, err := upstream.ParseTargets(r.Targets)
		if err == nil {
			rs.set, err = upstream.New(targets, upstream.Options{})
		}
		rs.setErr = err
	})
	return rs.set, rs.setErr
}

// listener is one bound UDP socket and its flows. Its reader goroutine
// (run) owns t; other goroutines post to it.
type listener struct {
	e       *Engine
	conn    *net.UDPConn
	addr    string
	primary bool        // the first socket of its address (Addrs lists it)
	group   []*listener // the sockets of its address, on the primary
	t       *flowTable
	done    chan struct{} // run returned

	idle   atomic.Bool  // the owner is (about to be) blocked in a read: wake it to post
	nposts atomic.Int32 // len(posts), read without mu

	// On an event loop (Options.Loops): drv runs ln, and head (the
	// primary) gives the loops back once loopsLeft of its group stopped.
	drv          *driver
	head         *listener
	begun        atomic.Bool // its owner was started (begin)
	loopsLeft    atomic.Int32
	releaseLoops func()
	stopOnce     sync.Once

	mu      sync.Mutex // guards posts and stopped
	posts   []func()
	stopped bool
}

// New returns an engine.
func New(opt Options) *Engine {
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	e := &Engine{opt: opt, now: opt.Now, period: opt.Sweep, sources: newSources(), seed: maphash.MakeSeed()}
	if e.now == nil {
		e.now = time.Now
	}
	if e.period <= 0 {
		e.period = 250 * time.Millisecond
	}
	e.refLog = guard.NewRateLimitedLogger(opt.Log, refusalLogRate, e.now)
	e.dialCtx, e.cancelDial = context.WithCancel(context.Background())
	if opt.Context != nil {
		e.stopCtx = context.AfterFunc(opt.Context, e.shutdown)
	}
	return e
}

// Listen binds addr and serves it until Close.
func (e *Engine) Listen(ctx context.Context, addr string) (net.Addr, error) {
	ln, err := e.listen(ctx, addr)
	if err != nil {
		return nil, err
	}
	return ln.conn.LocalAddr(), nil
}

// listen binds addr with the engine's sockets (BindSockets) and starts
// their owners; it returns the primary, whose group is them all.
func (e *Engine) listen(ctx context.Context, addr string) (*listener, error) {
	pc, err := e.BindSockets(ctx, addr)
	if err != nil {
		return nil, err
	}
	return e.start(pc.(*sockets).UDPConn, pc.(*sockets).others)
}

// Addrs returns the bound listeners' addresses.
func (e *Engine) Addrs() []net.Addr {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []net.Addr
	for _, ln := range e.lns {
		if ln.primary {
			out = append(out, ln.conn.LocalAddr())
		}
	}
	return out
}

// Flows is the number of flows in the tables.
func (e *Engine) Flows() int { return e.count.load() }

// Close stops the listeners, ends every flow and waits for the goroutines.
func (e *Engine) Close() {
	e.shutdown()
	e.wg.Wait()
}

// shutdown closes the listeners (each owner then ends its flows) and
// ends the dials in flight.
func (e *Engine) shutdown() {
	e.shutOnce.Do(func() {
		if e.stopCtx != nil {
			e.stopCtx()
		}
		e.mu.Lock()
		e.closed = true
		lns := e.lns
		e.lns = nil
		e.mu.Unlock()
		for _, ln := range lns {
			ln.stop()
		}
		e.cancelDial()
	})
}

// stopListener closes the sockets of primary's address and waits until
// their owners ended their flows.
func (e *Engine) stopListener(primary *listener) {
	e.mu.Lock()
	e.lns = slices.DeleteFunc(e.lns, func(l *listener) bool { return slices.Contains(primary.group, l) })
	e.mu.Unlock()
	for _, ln := range primary.group {
		ln.stop()
	}
	for _, ln := range primary.group {
		<-ln.done
	}
}

// stop closes ln's socket: its owner (a goroutine, or a loop) then ends
// its flows.
func (ln *listener) stop() {
	ln.stopOnce.Do(func() {
		ln.begin() // a held listener's owner runs to end it
		if ln.drv != nil {
			ln.stopLoop()
		}
		ln.conn.Close()
	})
}

// Sweep ends the flows idle past their timeout and decides the
// undecided ones past MaxWait, as of now, on every listener.
func (e *Engine) Sweep(now time.Time) {
	e.mu.Lock()
	lns := slices.Clone(e.lns)
	e.mu.Unlock()
	for _, ln := range lns {
		ln.call(func() { ln.sweep(now) })
	}
}

// run is the owner: it reads the listener's datagrams, runs what other
// goroutines post, and sweeps every period, until the socket is closed;
// then it ends every flow.
func (ln *listener) run() {
	e := ln.e
	defer e.wg.Done()
	defer close(ln.done)
	buf := make([]byte, maxDatagram)
	nextSweep := time.Now().Add(e.period)
	armed := false
loop:
	for {
		if ln.nposts.Load() > 0 {
			ln.runPosts()
		}
		if wall := time.Now(); !wall.Before(nextSweep) {
			ln.sweep(e.now())
			nextSweep = wall.Add(e.period)
			armed = false
		}
		if !armed {
			// Armed before the next look at posts, so that a post made
			// after it wakes the read (see post).
			_ = ln.conn.SetReadDeadline(nextSweep)
			armed = true
		}
		ln.idle.Store(true)
		if ln.nposts.Load() > 0 {
			ln.idle.Store(false)
			continue
		}
		// One datagram a call: recvmmsg (golang.org/x/net/ipv4 ReadBatch,
		// 8 at a time) measured no less CPU per query (bench/README.md).
		n, client, err := ln.conn.ReadFromUDPAddrPort(buf)
		ln.idle.Store(false)
		switch {
		case err == nil:
			ln.datagram(netip.AddrPortFrom(client.Addr().Unmap(), client.Port()), buf[:n], e.now())
		case errors.Is(err, net.ErrClosed):
			break loop
		case errors.Is(err, os.ErrDeadlineExceeded):
			armed = false // woken to run posts, or time to sweep
		}
		// Any other error is a previous reply's ICMP error and the like:
		// the socket itself still works.
	}
	ln.mu.Lock()
	ln.stopped = true
	ln.mu.Unlock()
	for _, f := range ln.t.flows {
		ln.end(f, "closed")
	}
	// What was posted meanwhile finds no flow: a dial's socket is closed.
	ln.runPosts()
}

// post runs fn on ln's owner; false when the owner has stopped (fn will
// never run). With wake, an owner waiting in a read is woken for it;
// else fn runs with the next datagram or sweep.
func (ln *listener) post(fn func(), wake bool) bool {
	if ln.drv != nil {
		return ln.drv.lp.Post(fn)
	}
	ln.mu.Lock()
	if ln.stopped {
		ln.mu.Unlock()
		return false
	}
	ln.posts = append(ln.posts, fn)
	ln.nposts.Store(int32(len(ln.posts)))
	ln.mu.Unlock()
	// The owner sets idle before its last look at nposts: either it sees
	// the post there, or this sees idle and wakes its read.
	if wake && ln.idle.Load() {
		_ = ln.conn.SetReadDeadline(time.Unix(1, 0))
	}
	return true
}

// call runs fn on ln's owner and waits for it; false when the owner has
// stopped.
func (ln *listener) call(fn func()) bool {
	done := make(chan struct{})
	if !ln.post(func() { fn(); close(done) }, true) {
		return false
	}
	select {
	case <-done:
		return true
	case <-ln.done:
		return false
	}
}

func (ln *listener) runPosts() {
	ln.mu.Lock()
	posts := ln.posts
	ln.posts = nil
	ln.nposts.Store(0)
	ln.mu.Unlock()
	for _, fn := range posts {
		fn()
	}
}

// datagram handles one datagram from client, at now.
func (ln *listener) datagram(client netip.AddrPort, b []byte, now time.Time) {
	f := ln.t.lookup(client)
	if f != nil && f.state == stRouted {
		if !ln.ask(f, b) {
			ln.e.dropped(metrics.UDPUncheckedQuery)
			return
		}
		if n := f.rs.responses; n == 0 || f.expect(n) {
			f.last.Store(now.UnixNano())
			if !ln.queueUp(f, b) {
				ln.sendUp(f, b)
			}
			return
		}
	}
	// What waits to go up (queueUp) goes now: what follows may end a flow
	// (answered, evicted) or send a new one's datagrams.
	ln.flushUp()
	if f != nil && f.state == stRouted {
		// Its reader ended it at its last awaited reply (udp_responses):
		// this datagram begins the client's next flow.
		ln.end(f, "answered")
		f = nil
	}
	if f == nil {
		if f = ln.open(client, now); f == nil {
			return
		}
	}
	if f.state == stDialing {
		ln.t.hold(f, b) // sent once the dial is done; dropped past the bounds
		return
	}
	ln.identify(f, b, now, false)
}

// open admits a flow from client, or counts why not.
func (ln *listener) open(client netip.AddrPort, now time.Time) *flow {
	e := ln.e
	s := e.settings()
	if ln.t.sourceFull(client, s.MaxFlowsPerSource) {
		e.refuse(metrics.UDPPerSource)
		e.refLog.Warn("udp flow refused: max_udp_flows_per_source reached", "source", sourceKey(client.Addr()).String(), "max_udp_flows_per_source", s.MaxFlowsPerSource)
		return nil
	}
	var ticket guard.Ticket
	if e.opt.Guard != nil {
		t, r := e.opt.Guard.Admit(client.Addr())
		if r != guard.Allowed {
			e.refuse(metrics.UDPGuardRefusal(r)) // the guard logs its own refusals
			return nil
		}
		ticket = t
	}
	for !ln.t.room(s.MaxFlows) {
		v := ln.t.victim()
		if v == nil {
			// The other listeners hold every flow.
			e.releaseGuard(ticket)
			e.refuse(metrics.UDPTableFull)
			e.refLog.Warn("udp flow refused: max_udp_flows reached on other listeners", "client", client.String(), "max_udp_flows", s.MaxFlows)
			return nil
		}
		e.refLog.Warn("udp flow evicted: max_udp_flows reached", "client", v.client.String(), "max_udp_flows", s.MaxFlows)
		if v.state == stRouted {
			ln.end(v, "evicted")
		} else {
			ln.drop(v, metrics.UDPEvicted)
		}
	}
	f := ln.t.insert(client, now, s.MaxFlowsPerSource > 0, ticket)
	f.ln = ln
	if e.opt.Stats != nil {
		e.opt.Stats.Active.Inc()
	}
	return f
}

// identify adds b to undecided f's datagrams and routes or drops f when
// that is decided.
func (ln *listener) identify(f *flow, b []byte, now time.Time, final bool) {
	r, more, why := ln.t.identify(f, b, ln.e.table(), now, final)
	switch {
	case more:
	case r == nil:
		ln.drop(f, why)
	default:
		ln.route(f, r, now)
	}
}

// route connects f to a target of r, in the order of r's plan, and sends
// its datagrams. IP targets are connected here (a UDP connect does not
// block); a host name is resolved by a goroutine, which posts the result.
func (ln *listener) route(f *flow, r *Route, now time.Time) {
	set, err := r.state.backend(r)
	if err != nil {
		ln.e.refLog.Warn("udp route has no usable target", "protocol", r.Name, "err", err)
		ln.drop(f, metrics.UDPDialError)
		return
	}
	p := set.DatagramPlan()
	for {
		a, ok := p.Next()
		if !ok {
			ln.drop(f, metrics.UDPDialError)
			return
		}
		if !a.Addr.IsValid() {
			f.state = stDialing
			f.last.Store(now.UnixNano()) // the dial has MaxWait from now
			ln.t.wait(f, now)
			ln.e.wg.Add(1)
			go ln.dialOff(f, r, set, p, a)
			return
		}
		begin := time.Now()
		up, err := ln.dial(r, a.Addr, now)
		release := p.Done(a, time.Since(begin), err)
		if err == nil {
			ln.forward(f, r, up, set, a, release, now)
			return
		}
	}
}

// dialOff goes on with f's plan off the owner from attempt a, a host
// name, and posts what it got.
func (ln *listener) dialOff(f *flow, r *Route, set *upstream.Set, p upstream.Plan, a upstream.Attempt) {
	defer ln.e.wg.Done()
	ctx, cancel := context.WithTimeout(ln.e.dialCtx, dialTimeout)
	defer cancel()
	for ok := true; ok; a, ok = p.Next() {
		begin := time.Now()
		up, err := ln.dialName(ctx, r, a.Target)
		release := p.Done(a, time.Since(begin), err)
		if err != nil {
			continue
		}
		if !ln.post(func() { ln.dialed(f, r, up, set, a, release) }, true) {
			up.Close()
			release()
		}
		return
	}
	ln.post(func() { ln.dialed(f, r, nil, nil, upstream.Attempt{}, nil) }, true)
}

// dialName is a socket connected to the first address target's host
// resolves to, set up by r's rule (upSocketFor); off the owner.
func (ln *listener) dialName(ctx context.Context, r *Route, target string) (upConn, error) {
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		return nil, err
	}
	pn, err := net.LookupPort("udp", port)
	if err != nil {
		return nil, err
	}
	res := ln.e.opt.Resolver
	if res == nil {
		res = net.DefaultResolver
	}
	ips, err := res.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	if len(ips) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	ap := netip.AddrPortFrom(ips[0].Unmap(), uint16(pn))
	so := upSocketFor(r.state.responses)
	if ln.drv != nil {
		return ln.dialLoop(ap, so) // a loop watches a bare descriptor
	}
	return dialDatagram(ap, so)
}

// dialed is dialOff's result on the owner: up is nil when no target could
// be had.
func (ln *listener) dialed(f *flow, r *Route, up upConn, set *upstream.Set, a upstream.Attempt, release func()) {
	if f.out { // out for a move: the move's end decides
		f.outcome = &dialOutcome{r: r, up: up, set: set, a: a, release: release}
		return
	}
	if ln.t.lookup(f.client) != f {
		if up != nil { // the flow ended meanwhile
			up.Close()
			release()
		}
		return
	}
	if up == nil {
		ln.drop(f, metrics.UDPDialError)
		return
	}
	ln.forward(f, r, up, set, a, release, ln.e.now())
}

// forward makes f a routed flow through up, sends the datagrams it held
// and starts its reply reader.
func (ln *listener) forward(f *flow, r *Route, up upConn, set *upstream.Set, a upstream.Attempt, release func(), now time.Time) {
	pending := f.pending
	f.route, f.rs, f.up, f.release, f.state = r, r.state, up, release, stRouted
	f.set, f.att = set, a
	idle := r.IdleTimeout
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	ln.t.routed(f, idle, now)
	if f.rs.responses > 0 {
		ln.t.await(f, now)
	}
	f.rs.m.Flows.Inc()
	if ln.drv != nil {
		ln.attachUp(f)
	}
	for _, d := range pending {
		if !ln.ask(f, d) {
			ln.e.dropped(metrics.UDPUncheckedQuery)
			continue
		}
		f.expect(f.rs.responses) // the reader has not started: never answered yet
		ln.sendUp(f, d)
	}
	if ln.drv != nil {
		ln.watchUp(f)
		return
	}
	ln.e.wg.Add(1)
	go ln.replies(f)
}

// sendUp writes b, from f's client, to f's target; a datagram the kernel
// refuses is lost, and counted.
func (ln *listener) sendUp(f *flow, b []byte) {
	_, err := f.up.Write(b)
	switch {
	case err == nil:
		ln.countUp(f, len(b))
	case kernelRefused(err):
		ln.e.dropped(metrics.UDPUpstreamSendFailed)
	}
}

// kernelRefused reports whether err, a send's, is the kernel's refusal of the
// datagram. A socket closed under the send (its flow or listener ending)
// is not one: that datagram has no flow left to count it for.
func kernelRefused(err error) bool {
	return err != nil && !errors.Is(err, net.ErrClosed)
}

// countUp counts a datagram of size bytes sent to f's target.
func (ln *listener) countUp(f *flow, size int) {
	f.dgUp.Add(1)
	f.bytesUp.Add(int64(size))
	f.rs.m.DatagramsUp.Inc()
	f.rs.m.BytesUp.Add(float64(size))
}

// dial is a socket connected to ap for a flow of r, one the owner can
// read, set up by r's rule (upSocketFor): on a loop, one from its pool
// when r reuses sockets (now: for the pool's idle bound).
func (ln *listener) dial(r *Route, ap netip.AddrPort, now time.Time) (upConn, error) {
	if ln.drv != nil {
		return ln.upFor(r, ap, now)
	}
	return dialDatagram(ap, upSocketFor(r.state.responses))
}

// upSocket is how a flow's upstream socket is set up, decided per route.
type upSocket struct {
	// rcvbuf is the SO_RCVBUF asked for (the kernel caps it at
	// net.core.rmem_max); 0: the kernel's default, and no system call.
	rcvbuf int
	// gro asks for UDP_GRO (on the loops, Linux): a train of the
	// backend's datagrams is read, and sent on to the client, whole.
	gro bool
}

// upSocketFor is the upstream socket of a flow of a route whose
// udp_responses is responses. A request/response flow (a DNS query and
// its answer) lives for one exchange: the default buffer holds it, and a
// resolver's new flow per query pays no setsockopt. A flow that carries a
// stream (QUIC, WireGuard, a VPN: no udp_responses) gets flowBuffer, so a
// backend's burst (a QUIC server's GSO train of up to 64 datagrams) waits
// there while the loop forwards the previous one, instead of being
// dropped and resent: with the default 208 KiB a 512 MiB QUIC download
// lost 357-837 datagrams to it (bench/README.md, QUIC bulk). The buffer
// is a limit, not an allocation: the kernel charges only what is queued,
// and all UDP sockets together stay within net.ipv4.udp_mem.
func upSocketFor(responses int) upSocket {
	if responses > 0 {
		return upSocket{}
	}
	return upSocket{rcvbuf: flowBuffer, gro: true}
}

// reply forwards b, a datagram from f's target, to f's client; true when
// it was the last one f awaited (udp_responses): the caller ends f. b is a
// train of datagrams of seg bytes each but the last when seg is above 0
// (UDP_GRO, on the loops; only flows without udp_responses ask for it).
func (ln *listener) reply(f *flow, b []byte, seg int) bool {
	if !f.heard {
		f.heard = true
		f.set.DatagramReplied(f.att) // the target answers
	}
	f.last.Store(ln.e.now().UnixNano())
	switch {
	case ln.drv == nil:
		_, err := ln.conn.WriteToUDPAddrPort(b, f.client)
		if err == nil {
			ln.countDown(f, segments(len(b), seg), len(b))
		} else if kernelRefused(err) {
			ln.e.dropped(metrics.UDPSendFailed)
		}
	case ln.queueLoop(f, b, seg):
		// Counted once sent, or refused (flushSends).
	default:
		ln.sendLoop(f, b, seg)
	}
	// A reply the client did not get still counts: the backend sent it.
	return f.rs.responses > 0 && f.replied()
}

// countDown counts n datagrams of size bytes together sent to f's client.
func (ln *listener) countDown(f *flow, n, size int) {
	f.dgDown.Add(int64(n))
	f.bytesDown.Add(int64(size))
	f.rs.m.DatagramsDn.Add(float64(n))
	f.rs.m.BytesDown.Add(float64(size))
}

// segments is how many datagrams a train of n bytes cut every seg bytes
// is (seg 0: one datagram).
func segments(n, seg int) int {
	if seg <= 0 || n <= seg {
		return 1
	}
	return (n + seg - 1) / seg
}

// eachSegment calls fn with each datagram of b, a train cut every seg
// bytes (seg > 0).
func eachSegment(b []byte, seg int, fn func([]byte)) {
	for len(b) > seg {
		fn(b[:seg])
		b = b[seg:]
	}
	fn(b)
}

// replies forwards what f's upstream sends to f's client until the
// upstream socket is closed. When the flow awaits no more replies (the
// route's udp_responses for each datagram sent) it ends the flow: it
// closes the socket now and posts the rest to the owner.
func (ln *listener) replies(f *flow) {
	defer ln.e.wg.Done()
	readReplies(f.up, func(b []byte) {
		if ln.reply(f, b, 0) {
			f.up.Close()
			// Its socket is closed already: the table entry can wait for
			// the owner's next wake-up.
			ln.post(func() { ln.end(f, "answered") }, false)
		}
	})
}

// drop ends a flow that was not routed, counting why.
func (ln *listener) drop(f *flow, why metrics.UDPRefusal) {
	if ln.remove(f) {
		ln.e.refuse(why)
		ln.e.releaseGuard(f.ticket)
	}
}

// end ends f for reason, once.
func (ln *listener) end(f *flow, reason string) {
	if ln.remove(f) {
		ln.sent(f)
		ln.e.finish(f, reason)
	}
}

// remove takes f out of the table; false when it was out already.
func (ln *listener) remove(f *flow) bool {
	if !ln.t.remove(f) {
		return false
	}
	if s := ln.e.opt.Stats; s != nil {
		s.Active.Dec()
	}
	return true
}

// sweep ends the flows idle past their timeout and decides those
// undecided past MaxWait, as of now.
func (ln *listener) sweep(now time.Time) {
	for f := ln.t.due(now); f != nil; f = ln.t.due(now) {
		switch f.state {
		case stIdentifying:
			ln.identify(f, nil, now, true)
		case stDialing:
			ln.drop(f, metrics.UDPDialError) // resolving took MaxWait
		case stRouted:
			ln.end(f, "idle")
		}
	}
	for f := ln.t.unanswered(now, noReplyWindow); f != nil; f = ln.t.unanswered(now, noReplyWindow) {
		f.set.DatagramSilent(f.att, noReplyWindow)
	}
	ln.sweepPool(now)
}

func (e *Engine) refuse(why metrics.UDPRefusal) {
	if e.opt.Stats != nil {
		e.opt.Stats.Refused(why).Inc()
	}
}

// dropped counts a datagram dropped on a flow's way for why.
func (e *Engine) dropped(why metrics.UDPDrop) {
	if e.opt.Stats != nil {
		e.opt.Stats.Dropped(why).Inc()
	}
}

// pooled counts d sockets put in (or, negative, taken out of) a pool.
func (e *Engine) pooled(d int) {
	if e.opt.Stats != nil {
		e.opt.Stats.Pooled.Add(float64(d))
	}
}

func (e *Engine) releaseGuard(t guard.Ticket) {
	if e.opt.Guard != nil {
		e.opt.Guard.Release(t)
	}
}

// finish releases a removed flow's socket (to its listener's pool, when
// answered and for reuse), target and ticket, counts and logs it.
func (e *Engine) finish(f *flow, reason string) {
	e.releaseGuard(f.ticket)
	if f.state != stRouted {
		return
	}
	if reason != "answered" || !f.ln.recycle(f) {
		f.up.Close()
	}
	f.release()
	if e.opt.Stats != nil {
		switch reason {
		case "idle":
			e.opt.Stats.Idle.Inc()
		case "evicted":
			e.opt.Stats.Evicted.Inc()
		case "answered":
			e.opt.Stats.Answered.Inc()
		}
	}
	logging.LogFlow(e.opt.Log, e.settings().AccessLog, logging.Flow{
		Start: f.start, Client: net.UDPAddrFromAddrPort(f.client), Protocol: f.route.Name, Route: f.route.Label,
		Target: f.att.Target, DatagramsUp: f.dgUp.Load(), DatagramsDown: f.dgDown.Load(),
		BytesUp: f.bytesUp.Load(), BytesDown: f.bytesDown.Load(), Reason: reason,
	})
}

func (e *Engine) table() *Table {
	if e.opt.Table == nil {
		return nil
	}
	return e.opt.Table()
}

func (e *Engine) settings() Settings {
	var s Settings
	if e.opt.Settings != nil {
		s = e.opt.Settings()
	}
	if s.MaxFlows <= 0 {
		s.MaxFlows = DefaultMaxFlows
	}
	return s
}
