// Package protoplex is a protocol multiplexer: one listening port, each
// connection identified from its first bytes and forwarded to that protocol's
// backend or served by an in-process handler.
package protoplex

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/darkit/protoplex/internal/config"
	"github.com/darkit/protoplex/internal/guard"
	"github.com/darkit/protoplex/internal/identify"
	"github.com/darkit/protoplex/internal/upstream"
	"github.com/darkit/protoplex/protocols"
)

// ErrClosed is returned by RunServer after Close.
var ErrClosed = errors.New("protoplex: manager closed")

// ErrListenerRemoved, as the cancel cause of Serve's context, stops that one
// listener without draining: other listeners keep serving the connections.
var ErrListenerRemoved = errors.New("protoplex: listener removed")

// ProtocolManager accepts connections, identifies their protocol and routes
// them. Its methods are safe for concurrent use.
type ProtocolManager struct {
	optErr error
	log    *slog.Logger
	bufs   *bufferPools
	stats  *stats

	mu       sync.Mutex // guards protos, settings, listeners, closed
	protos   []*protocols.Protocol
	settings atomic.Pointer[settings]
	routing  atomic.Pointer[routing]
	guard    *guard.Guard
	closed   bool

	conns    connSet
	draining atomic.Bool
	serving  atomic.Int32 // listeners currently accepting
	ctx      context.Context
	cancel   context.CancelFunc

	prom, health *promExporter // HTTP servers for /metrics and /health/*
}

// settings are the server: values a connection runs with; UpdateConfig
// swaps them whole.
type settings struct {
	config.Server
	trustedProxies []netip.Prefix
}

// routing is an immutable snapshot of the routes and their backends. A
// connection keeps the snapshot it started with, so reloads never disturb it.
type routing struct {
	table    *identify.Table
	backends []*upstream.Set // by Route.Index; nil for in-process handlers
	stats    []*routeStats   // by Route.Index: no lookup per connection
}

// NewProtocolManager returns a manager with the given options. An invalid
// option does not panic: RunServer (and Err) return the error.
func NewProtocolManager(opts ...Option) *ProtocolManager {
	pm, err := New(opts...)
	if err != nil {
		pm.optErr = err
	}
	return pm
}

// New is NewProtocolManager returning the option error directly.
func New(opts ...Option) (*ProtocolManager, error) {
	o := options{server: config.DefaultServer()}
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	pm := &ProtocolManager{log: o.logger, stats: newStats(), bufs: newBufferPools()}
	pm.stats.registerManager(pm)
	pm.ctx, pm.cancel = context.WithCancel(context.Background())
	pm.settings.Store(&settings{Server: o.server})
	pm.conns.init()
	err := config.CheckServer(o.server)
	if err == nil {
		pm.guard, err = guard.New(guard.Config{}, pm.log, nil)
	}
	if err == nil {
		err = pm.rebuild()
	}
	return pm, err
}

// Err returns the option validation error, if any.
func (pm *ProtocolManager) Err() error { return pm.optErr }

// AddProtocol registers p. Protocols are ranked by specificity, Priority and
// then registration order; see docs/ARCHITECTURE.md.
func (pm *ProtocolManager) AddProtocol(p *protocols.Protocol) error {
	if p == nil {
		return errors.New("protoplex: AddProtocol(nil)")
	}
	pm.mu.Lock()
	defer pm.mu.Unlock()
	pm.protos = append(pm.protos, p)
	if err := pm.rebuildLocked(); err != nil {
		pm.protos = pm.protos[:len(pm.protos)-1]
		return err
	}
	return nil
}

// RemoveProtocol removes every protocol called name (case-insensitive).
// Connections already routed continue.
func (pm *ProtocolManager) RemoveProtocol(name string) error {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	kept := pm.protos[:0:0]
	for _, p := range pm.protos {
		if !strings.EqualFold(p.Name, name) {
			kept = append(kept, p)
		}
	}
	if len(kept) == len(pm.protos) {
		return fmt.Errorf("protoplex: no protocol %q", name)
	}
	old := pm.protos
	pm.protos = kept
	if err := pm.rebuildLocked(); err != nil {
		pm.protos = old
		return err
	}
	return nil
}

// Protocols returns the registered protocols in registration order.
func (pm *ProtocolManager) Protocols() []*protocols.Protocol {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	return append([]*protocols.Protocol(nil), pm.protos...)
}

func (pm *ProtocolManager) rebuild() error {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	return pm.rebuildLocked()
}

// rebuildLocked compiles pm.protos into a new routing snapshot and swaps it
// in. Backend sets of unchanged targets are reused so health state and warm
// pools survive reloads.
func (pm *ProtocolManager) rebuildLocked() error {
	plan, err := pm.planRoutingLocked(pm.protos, pm.settings.Load().CacheTTL)
	if err != nil {
		return err
	}
	pm.commitRoutingLocked(plan)
	return nil
}

// routingPlan is a routing snapshot built but not live yet: its fresh
// backend sets are not started, and the sets it would retire still serve.
type routingPlan struct {
	next   *routing
	fresh  []*upstream.Set
	unused []*upstream.Set
}

// planRoutingLocked builds the routing of protos without changing anything
// (no set started, none closed, no metric created).
func (pm *ProtocolManager) planRoutingLocked(protos []*protocols.Protocol, cacheTTL time.Duration) (*routingPlan, error) {
	table, err := identify.NewTable(protos, cacheTTL, &pm.stats.cache)
	if err != nil {
		return nil, fmt.Errorf("protoplex: %w", err)
	}
	old := pm.routing.Load()
	reuse := map[string]*upstream.Set{}
	if old != nil {
		for i, r := range old.table.Routes() {
			if b := old.backends[i]; b != nil {
				reuse[backendKey(r.Proto)] = b
			}
		}
	}
	next := &routing{table: table, backends: make([]*upstream.Set, len(table.Routes())), stats: make([]*routeStats, len(table.Routes()))}
	plan := &routingPlan{next: next}
	for i, r := range table.Routes() {
		p := r.Proto
		if p.Handler != nil {
			continue
		}
		key := backendKey(p)
		if b, ok := reuse[key]; ok {
			next.backends[i] = b
			delete(reuse, key)
			continue
		}
		targets, err := upstream.ParseTargets([]string{p.Target})
		if err != nil {
			plan.discard()
			return nil, fmt.Errorf("protoplex: protocol %q: %w", p.Name, err)
		}
		source, err := upstream.ParseSource(p.Source)
		if err != nil {
			plan.discard()
			return nil, fmt.Errorf("protoplex: protocol %q: %w", p.Name, err)
		}
		h := p.Health
		b, err := upstream.New(targets, upstream.Options{
			Strategy:    p.Balance,
			SendProxy:   p.SendProxy,
			DialDone:    pm.stats.dialObserver(p.Name),
			StateChange: pm.stats.stateObserver(p.Name),
			Health:      upstream.HealthCheck{Interval: h.Interval, Timeout: h.Timeout, Rise: h.Rise, Fall: h.Fall, Check: h.Check, Path: h.Path},
			Pool:        upstream.Pool{MinIdle: p.Pool.MinIdle, MaxIdleTime: p.Pool.MaxIdleTime},
			Source:      source,
		})
		if err != nil {
			plan.discard()
			return nil, fmt.Errorf("protoplex: protocol %q: %w", p.Name, err)
		}
		plan.fresh = append(plan.fresh, b)
		next.backends[i] = b
	}
	for _, b := range reuse {
		plan.unused = append(plan.unused, b)
	}
	return plan, nil
}

// discard releases the sets a plan built and will never use.
func (plan *routingPlan) discard() {
	for _, b := range plan.fresh {
		b.Close()
	}
}

// commitRoutingLocked makes plan the live routing. It cannot fail.
func (pm *ProtocolManager) commitRoutingLocked(plan *routingPlan) {
	for i, r := range plan.next.table.Routes() {
		plan.next.stats[i] = pm.stats.route(r.Proto.Name)
	}
	for _, b := range plan.fresh {
		b.Start(pm.ctx)
	}
	pm.routing.Store(plan.next)
	// Sets no route uses any more stop their checks and pools; connections
	// already dialed through them are not affected.
	for _, b := range plan.unused {
		b.Close()
	}
}

// backendKey identifies a backend set that can be reused across rebuilds.
func backendKey(p *protocols.Protocol) string {
	return fmt.Sprintf("%s|%s|%s|%s|%+v|%+v|%q", strings.ToLower(p.Name), p.Target, p.Balance, p.SendProxy, p.Pool, p.Health, p.Source)
}

// RunServer listens on addr and serves until ctx is cancelled or Close is
// called; then it stops accepting, drains active connections for up to the
// graceful shutdown timeout, closes the rest and returns.
func (pm *ProtocolManager) RunServer(ctx context.Context, addr string) error {
	if pm.optErr != nil {
		return pm.optErr
	}
	ln, err := Listen(ctx, addr)
	if err != nil {
		return err
	}
	return pm.Serve(ctx, ln)
}

// Listen opens a TCP listener for Serve that leaves TCP keepalive to the
// manager's WithTCPKeepAlive (net.Listen would turn it on for every
// accepted connection, at the cost of four syscalls each).
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("protoplex: listen %s: %w", addr, err)
	}
	return ln, nil
}

// Serve is RunServer on an existing listener (which it closes).
func (pm *ProtocolManager) Serve(ctx context.Context, ln net.Listener) error {
	if pm.optErr != nil {
		ln.Close()
		return pm.optErr
	}
	pm.mu.Lock()
	if pm.closed {
		pm.mu.Unlock()
		ln.Close()
		return ErrClosed
	}
	pm.mu.Unlock()
	pm.log.Info("protoplex listening", "addr", ln.Addr().String())
	pm.serving.Add(1)
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	stopMgr := context.AfterFunc(pm.ctx, func() { ln.Close() })
	err := pm.acceptLoop(ln)
	stop()
	stopMgr()
	pm.serving.Add(-1)
	ln.Close()
	if !errors.Is(context.Cause(ctx), ErrListenerRemoved) {
		pm.drain()
	}
	if pm.ctx.Err() != nil {
		return nil
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (pm *ProtocolManager) acceptLoop(ln net.Listener) error {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of fds or similar: back off instead of spinning.
			if backoff == 0 {
				backoff = 5 * time.Millisecond
			} else if backoff < time.Second {
				backoff *= 2
			}
			pm.log.Warn("accept failed", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-pm.ctx.Done():
				return nil
			}
			continue
		}
		backoff = 0
		go pm.serveConn(c)
	}
}

// drain waits for active connections to finish, polling, up to the graceful
// shutdown timeout, then closes the rest.
func (pm *ProtocolManager) drain() {
	if pm.serving.Load() > 0 {
		return // another listener still serves
	}
	pm.draining.Store(true)
	defer pm.draining.Store(false)
	timeout := pm.settings.Load().GracefulShutdownTimeout
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for pm.conns.len() > 0 && time.Now().Before(deadline) {
		<-tick.C
	}
	if n := pm.conns.len(); n > 0 {
		pm.log.Info("drain deadline reached, closing connections", "count", n)
		pm.conns.closeAll()
		for pm.conns.len() > 0 {
			<-tick.C
		}
	}
}

// Draining reports whether the manager is shutting down.
func (pm *ProtocolManager) Draining() bool { return pm.draining.Load() }

// Serving reports whether at least one listener accepts connections.
func (pm *ProtocolManager) Serving() bool { return pm.serving.Load() > 0 }

// Close stops every listener, drains, and releases backends and exporters.
func (pm *ProtocolManager) Close() error {
	pm.mu.Lock()
	if pm.closed {
		pm.mu.Unlock()
		return nil
	}
	pm.closed = true
	pm.mu.Unlock()
	pm.cancel()
	// Serve's drain runs in RunServer; if nothing serves, close stragglers.
	if pm.serving.Load() == 0 {
		pm.conns.closeAll()
	}
	if pm.guard != nil {
		pm.guard.Close()
	}
	if rt := pm.routing.Load(); rt != nil {
		for _, b := range rt.backends {
			if b != nil {
				b.Close()
			}
		}
	}
	pm.mu.Lock()
	servers := []*promExporter{pm.prom, pm.health}
	pm.mu.Unlock()
	for _, s := range servers {
		if s != nil {
			s.close()
		}
	}
	return nil
}

// connSet tracks live connections, with their backend once dialled, so a
// drain can close both ends: closing only the client would leave a
// connection whose client half-closed waiting on a silent backend forever.
type connSet struct {
	mu sync.Mutex
	m  map[net.Conn]net.Conn // client → backend (nil before the dial)
	n  atomic.Int64
}

func (s *connSet) init() { s.m = make(map[net.Conn]net.Conn) }

func (s *connSet) add(c net.Conn) {
	s.mu.Lock()
	s.m[c] = nil
	s.mu.Unlock()
	s.n.Add(1)
}

// attach records c's backend. A drain that closed c just before is no
// problem: the copy then fails at once and closes the backend itself.
func (s *connSet) attach(c, backend net.Conn) {
	s.mu.Lock()
	s.m[c] = backend
	s.mu.Unlock()
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.m, c)
	s.mu.Unlock()
	s.n.Add(-1)
}

func (s *connSet) len() int64 { return s.n.Load() }

func (s *connSet) closeAll() {
	s.mu.Lock()
	for c, backend := range s.m {
		c.Close()
		if backend != nil {
			backend.Close()
		}
	}
	s.mu.Unlock()
}
