// Package udp is the UDP engine: one socket per server.listen_udp address,
// a flow per client address:port, identified from its first datagrams by
// the routes' datagram detectors, then forwarded through a connected
// socket of its own to one target of its route; replies go back from the
// listening socket.
//
// Bounds: the flow table holds at most MaxFlows flows (when full, the flow
// idle longest is evicted); each flow holds one upstream socket, so
// MaxFlows must stay below the process's fd limit. A source (an IPv4
// address, an IPv6 /64) holds at most MaxFlowsPerSource flows, and the
// guard (allow/deny lists, rate limit, per-IP cap) admits each new flow.
// An undecided flow holds at most MaxDatagrams datagrams and
// MaxPendingBytes, and all undecided flows together at most
// MaxPendingTotal; nothing is allocated for a datagram no route can take.
// Each listener reads into one 64 KiB buffer. Each routed flow has one
// goroutine reading its upstream socket; on unix it holds no buffer while
// it waits (it reads into a shared pool when the socket is readable).
// Idle flows are found by one janitor goroutine walking per-timeout LRU
// lists, not by a timer per flow.
package udp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/darkit/protoplex/internal/config"
	"github.com/darkit/protoplex/internal/guard"
	"github.com/darkit/protoplex/internal/logging"
	"github.com/darkit/protoplex/internal/metrics"
)

// Defaults and bounds of the flow table.
const (
	DefaultMaxFlows          = config.DefaultMaxUDPFlows
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultMaxFlowsPerSource = 64
	// MaxPendingTotal bounds the datagrams all undecided flows hold.
	MaxPendingTotal = 4 << 20
	// listenerBuffer is the receive buffer asked for each listener.
	listenerBuffer = 4 << 20
	// maxDatagram is the largest UDP payload.
	maxDatagram = 64 << 10
)

// Settings are what the engine runs with; a reload may change them: they
// apply from the next new flow on (a lower MaxFlows evicts down to it then).
type Settings struct {
	MaxFlows          int // 0: DefaultMaxFlows
	MaxFlowsPerSource int // 0: DefaultMaxFlowsPerSource
	AccessLog         bool
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
	// Sweep is the janitor's period (0: 250 ms). Tests call Sweep instead.
	Sweep time.Duration
	// Context, when it ends, closes the engine as Close does (nil: only
	// Close does).
	Context context.Context
	// ListenPacket binds a listener's address (nil: net.ListenConfig); an
	// upgraded process takes the socket its predecessor handed over.
	ListenPacket func(ctx context.Context, addr string) (net.PacketConn, error)
}

// Engine serves UDP listeners and their flows.
type Engine struct {
	opt Options
	now func() time.Time

	mu        sync.Mutex
	flows     map[flowKey]*flow
	classes   map[time.Duration]*lru
	perSource map[netip.Addr]int
	pending   int // bytes held by undecided flows
	lns       []*listener
	closed    bool

	wg          sync.WaitGroup // listener loops and flow readers
	stop        chan struct{}
	janitorDone chan struct{}
	active      atomic.Int64
}

type routeState struct {
	m  *metrics.UDPRoute
	rr atomic.Uint32
}

type flowKey struct {
	ln     *listener
	client netip.AddrPort
}

type listener struct {
	conn *net.UDPConn
	addr string
}

// New returns an engine; its janitor runs until Close.
func New(opt Options) *Engine {
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	e := &Engine{opt: opt, now: opt.Now, flows: map[flowKey]*flow{}, classes: map[time.Duration]*lru{},
		perSource: map[netip.Addr]int{}, stop: make(chan struct{}), janitorDone: make(chan struct{})}
	if e.now == nil {
		e.now = time.Now
	}
	period := opt.Sweep
	if period <= 0 {
		period = 250 * time.Millisecond
	}
	ctx := opt.Context
	if ctx == nil {
		ctx = context.Background()
	}
	go e.janitor(ctx, period)
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

func (e *Engine) listen(ctx context.Context, addr string) (*listener, error) {
	listenPacket := e.opt.ListenPacket
	if listenPacket == nil {
		var lc net.ListenConfig
		listenPacket = func(ctx context.Context, addr string) (net.PacketConn, error) {
			return lc.ListenPacket(ctx, "udp", addr)
		}
	}
	pc, err := listenPacket(ctx, addr)
	if err != nil {
		return nil, err
	}
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("not a UDP socket: %s", pc.LocalAddr())
	}
	ln := &listener{conn: uc, addr: addr}
	// Every flow's datagrams arrive on this one socket: a larger receive
	// buffer absorbs bursts while the loop forwards (the kernel caps it at
	// net.core.rmem_max).
	_ = ln.conn.SetReadBuffer(listenerBuffer)
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		ln.conn.Close()
		return nil, net.ErrClosed
	}
	e.lns = append(e.lns, ln)
	e.wg.Add(1)
	e.mu.Unlock()
	go e.readLoop(ln)
	return ln, nil
}

// Sockets calls fn with each listener's configured address and socket.
func (e *Engine) Sockets(fn func(addr string, conn *net.UDPConn)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ln := range e.lns {
		fn(ln.addr, ln.conn)
	}
}

// Addrs returns the bound listeners' addresses.
func (e *Engine) Addrs() []net.Addr {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]net.Addr, len(e.lns))
	for i, ln := range e.lns {
		out[i] = ln.conn.LocalAddr()
	}
	return out
}

// Flows is the number of flows in the table.
func (e *Engine) Flows() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.flows)
}

// Close stops the listeners, ends every flow and waits for the goroutines.
func (e *Engine) Close() {
	e.shutdown()
	<-e.janitorDone
}

// shutdown is Close but for the janitor's end, which may be what calls it.
func (e *Engine) shutdown() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		e.wg.Wait()
		return
	}
	e.closed = true
	for _, ln := range e.lns {
		ln.conn.Close()
	}
	var ended []*flow
	for _, f := range e.flows {
		e.removeLocked(f)
		ended = append(ended, f)
	}
	e.mu.Unlock()
	close(e.stop)
	for _, f := range ended {
		e.finish(f, "closed")
	}
	e.wg.Wait()
}

// Start binds addrs, then calls next (the manager starts its TCP
// listeners there): when a bind or next fails, the listeners Start bound
// are closed and the error returned. They stop when ctx ends. A reload
// does not rebind them: listen_udp takes effect at start.
func (e *Engine) Start(ctx context.Context, addrs []string, next func() error) error {
	var bound []*listener
	fail := func(err error) error {
		for _, ln := range bound {
			e.stopListener(ln)
		}
		return err
	}
	for _, a := range addrs {
		ln, err := e.listen(ctx, a)
		if err != nil {
			return fail(fmt.Errorf("listen_udp %s: %w", a, err))
		}
		bound = append(bound, ln)
		e.opt.Log.Info("protoplex listening", "addr", ln.conn.LocalAddr().String(), "transport", "udp")
	}
	if err := next(); err != nil {
		return fail(err)
	}
	for _, ln := range bound {
		context.AfterFunc(ctx, func() { e.stopListener(ln) })
	}
	return nil
}

// stopListener closes ln and ends its flows.
func (e *Engine) stopListener(ln *listener) {
	ln.conn.Close()
	var ended []*flow
	e.mu.Lock()
	e.lns = slices.DeleteFunc(e.lns, func(l *listener) bool { return l == ln })
	for k, f := range e.flows {
		if k.ln == ln {
			e.removeLocked(f)
			ended = append(ended, f)
		}
	}
	e.mu.Unlock()
	for _, f := range ended {
		e.finish(f, "closed")
	}
}

func (e *Engine) readLoop(ln *listener) {
	defer e.wg.Done()
	buf := make([]byte, maxDatagram)
	for {
		n, client, err := ln.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A previous reply's ICMP error and the like: the socket
			// itself still works.
			continue
		}
		e.datagram(ln, netip.AddrPortFrom(client.Addr().Unmap(), client.Port()), buf[:n])
	}
}

// datagram handles one datagram from client on ln.
func (e *Engine) datagram(ln *listener, client netip.AddrPort, b []byte) {
	now := e.now()
	key := flowKey{ln, client}
	e.mu.Lock()
	f := e.flows[key]
	if f != nil && f.up != nil {
		up, rs := f.up, f.rs
		e.mu.Unlock()
		f.last.Store(now.UnixNano())
		if _, err := up.Write(b); err == nil {
			f.dgUp.Add(1)
			f.bytesUp.Add(int64(len(b)))
			rs.m.DatagramsUp.Inc()
			rs.m.BytesUp.Add(float64(len(b)))
		}
		return
	}
	if f == nil {
		f = e.newFlowLocked(key, now)
		if f == nil {
			e.mu.Unlock()
			return
		}
	}
	e.identifyLocked(f, b, now, false)
	e.mu.Unlock()
}

// newFlowLocked admits a flow from key's client, or counts why not.
func (e *Engine) newFlowLocked(key flowKey, now time.Time) *flow {
	if e.closed {
		return nil
	}
	s := e.settings()
	src := sourceKey(key.client.Addr())
	if e.perSource[src] >= s.MaxFlowsPerSource {
		e.refuse("per_source_limit")
		return nil
	}
	var ticket guard.Ticket
	if e.opt.Guard != nil {
		t, r := e.opt.Guard.Admit(key.client.Addr())
		if r != guard.Allowed {
			e.refuse(r.String())
			return nil
		}
		ticket = t
	}
	for len(e.flows) >= s.MaxFlows {
		if !e.evictLocked() {
			break
		}
	}
	f := &flow{key: key, start: now, ticket: ticket}
	f.last.Store(now.UnixNano())
	e.flows[key] = f
	e.perSource[src]++
	e.active.Add(1)
	if e.opt.Stats != nil {
		e.opt.Stats.Active.Inc()
	}
	return f
}

// identifyLocked adds b to f's datagrams and decides when it can. A
// datagram that would take f past its bounds decides f without it.
func (e *Engine) identifyLocked(f *flow, b []byte, now time.Time, final bool) {
	t := e.table()
	if t == nil {
		e.dropLocked(f, "no_match")
		return
	}
	if b != nil {
		if f.pendingN+len(b) > MaxPendingBytes || e.pending+len(b) > MaxPendingTotal {
			if len(f.pending) == 0 {
				e.dropLocked(f, "pending_full")
				return
			}
			final = true
		} else {
			f.pending = append(f.pending, append([]byte(nil), b...))
			f.pendingN += len(b)
			e.pending += len(b)
		}
	}
	if len(f.pending) >= MaxDatagrams || now.Sub(f.start) >= MaxWait {
		final = true
	}
	r, more := t.Decide(f.pending, final)
	if more {
		f.first = true
		e.classLocked(MaxWait).push(f, f.start.UnixNano())
		return
	}
	if r == nil {
		reason := "no_match"
		if final && now.Sub(f.start) >= MaxWait {
			reason = "timeout"
		}
		e.dropLocked(f, reason)
		return
	}
	e.routeLocked(f, r, now)
}

// routeLocked connects f to a target of r and sends its datagrams.
func (e *Engine) routeLocked(f *flow, r *Route, now time.Time) {
	rs := r.state
	var up *net.UDPConn
	var target string
	for range len(r.Targets) {
		target = r.Targets[int(rs.rr.Add(1)-1)%len(r.Targets)]
		c, err := net.Dial("udp", target)
		if err == nil {
			up = c.(*net.UDPConn)
			break
		}
		e.opt.Log.Warn("udp backend dial failed", "protocol", r.Name, "target", target, "err", err)
	}
	if up == nil {
		e.dropLocked(f, "dial_error")
		return
	}
	if f.first {
		e.classLocked(MaxWait).remove(f)
	}
	f.route, f.rs, f.up, f.target = r, rs, up, target
	rs.m.Flows.Inc()
	for _, d := range f.pending {
		if _, err := up.Write(d); err == nil {
			f.dgUp.Add(1)
			f.bytesUp.Add(int64(len(d)))
			rs.m.DatagramsUp.Inc()
			rs.m.BytesUp.Add(float64(len(d)))
		}
	}
	e.pending -= f.pendingN
	f.pending, f.pendingN = nil, 0
	f.last.Store(now.UnixNano())
	idle := r.IdleTimeout
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	e.classLocked(idle).push(f, now.UnixNano())
	e.wg.Add(1)
	go e.replies(f)
}

// replies forwards what f's upstream sends to f's client until the
// upstream socket is closed.
func (e *Engine) replies(f *flow) {
	defer e.wg.Done()
	ln, client := f.key.ln, f.key.client
	readReplies(f.up, func(b []byte) {
		f.last.Store(e.now().UnixNano())
		if _, err := ln.conn.WriteToUDPAddrPort(b, client); err == nil {
			f.dgDown.Add(1)
			f.bytesDown.Add(int64(len(b)))
			f.rs.m.DatagramsDn.Inc()
			f.rs.m.BytesDown.Add(float64(len(b)))
		}
	})
}

// dropLocked ends an undecided flow without a route, counting reason.
func (e *Engine) dropLocked(f *flow, reason string) {
	e.refuse(reason)
	e.removeLocked(f)
	e.releaseGuard(f)
}

func (e *Engine) refuse(reason string) {
	if e.opt.Stats != nil {
		e.opt.Stats.Refused(reason).Inc()
	}
}

// removeLocked takes f out of the table; its socket and ticket are
// released by finish (or dropLocked).
func (e *Engine) removeLocked(f *flow) {
	if e.flows[f.key] != f {
		return
	}
	delete(e.flows, f.key)
	if f.list != nil {
		f.list.remove(f)
	}
	src := sourceKey(f.key.client.Addr())
	if e.perSource[src]--; e.perSource[src] <= 0 {
		delete(e.perSource, src)
	}
	e.pending -= f.pendingN
	f.pending, f.pendingN = nil, 0
	e.active.Add(-1)
	if e.opt.Stats != nil {
		e.opt.Stats.Active.Dec()
	}
}

func (e *Engine) releaseGuard(f *flow) {
	if e.opt.Guard != nil {
		e.opt.Guard.Release(f.ticket)
	}
}

// finish releases a removed flow's socket and ticket and logs it.
func (e *Engine) finish(f *flow, reason string) {
	e.releaseGuard(f)
	if f.up == nil {
		return
	}
	f.up.Close()
	if e.opt.Stats != nil {
		switch reason {
		case "idle":
			e.opt.Stats.Idle.Inc()
		case "evicted":
			e.opt.Stats.Evicted.Inc()
		}
	}
	logging.LogFlow(e.opt.Log, e.settings().AccessLog, logging.Flow{
		Start: f.start, Client: net.UDPAddrFromAddrPort(f.key.client), Protocol: f.route.Name, Route: f.route.Label,
		Target: f.target, DatagramsUp: f.dgUp.Load(), DatagramsDown: f.dgDown.Load(),
		BytesUp: f.bytesUp.Load(), BytesDown: f.bytesDown.Load(), Reason: reason,
	})
}

// evictLocked ends the flow idle longest; false when there is none.
func (e *Engine) evictLocked() bool {
	var oldest *flow
	for _, l := range e.classes {
		if f := l.oldest(); f != nil && (oldest == nil || f.last.Load() < oldest.last.Load()) {
			oldest = f
		}
	}
	if oldest == nil {
		return false
	}
	e.removeLocked(oldest)
	if oldest.up == nil {
		e.refuse("evicted")
		e.releaseGuard(oldest)
		return true
	}
	// The socket close and the log line are cheap enough to do here.
	e.finish(oldest, "evicted")
	return true
}

// Sweep ends the flows idle past their timeout and decides the
// undecided ones past MaxWait, as of now.
func (e *Engine) Sweep(now time.Time) {
	var ended []*flow
	e.mu.Lock()
	for d, l := range e.classes {
		limit := now.Add(-d).UnixNano()
		for {
			f := l.oldest()
			if f == nil || f.last.Load() > limit {
				break
			}
			if f.up == nil {
				e.identifyLocked(f, nil, now, true)
				continue
			}
			e.removeLocked(f)
			ended = append(ended, f)
		}
	}
	e.mu.Unlock()
	for _, f := range ended {
		e.finish(f, "idle")
	}
}

func (e *Engine) janitor(ctx context.Context, period time.Duration) {
	defer close(e.janitorDone)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-ctx.Done():
			e.shutdown()
			return
		case <-t.C:
			e.Sweep(e.now())
		}
	}
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
	if s.MaxFlowsPerSource <= 0 {
		s.MaxFlowsPerSource = DefaultMaxFlowsPerSource
	}
	return s
}

func (e *Engine) classLocked(d time.Duration) *lru {
	l := e.classes[d]
	if l == nil {
		l = newLRU()
		e.classes[d] = l
	}
	return l
}

// sourceKey is what the per-source cap counts: an IPv4 address, an IPv6
// /64.
func sourceKey(a netip.Addr) netip.Addr {
	if a.Is4() {
		return a
	}
	p, _ := a.Prefix(64)
	return p.Addr()
}
