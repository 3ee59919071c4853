// Package protoplex is a protocol multiplexer: one listening port, each
// connection identified from its first bytes and forwarded to that protocol's
// backend or served by an in-process handler.
//
// The root package is the public API: ProtocolManager and its routing
// snapshot (this file), listeners (serve.go), the per-connection path
// (conn.go), options and configuration (options.go, config.go,
// configured.go), monitoring (monitoring.go) and cluster mode
// (distributed.go). The machinery lives in internal/ (docs/ARCHITECTURE.md
// maps it).
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

	"github.com/darkit/protoplex/internal/bufpool"
	"github.com/darkit/protoplex/internal/config"
	"github.com/darkit/protoplex/internal/conntrack"
	"github.com/darkit/protoplex/internal/evloop"
	"github.com/darkit/protoplex/internal/guard"
	"github.com/darkit/protoplex/internal/listen"
	"github.com/darkit/protoplex/internal/metrics"
	"github.com/darkit/protoplex/internal/monitor"
	"github.com/darkit/protoplex/internal/routing"
	"github.com/darkit/protoplex/internal/udp"
	"github.com/darkit/protoplex/internal/upstream"
	"github.com/darkit/protoplex/protocols"
)

// ErrClosed is returned by RunServer, Serve and Start after Close.
var ErrClosed = errors.New("protoplex: manager closed")

// ErrListenerRemoved, as the cancel cause of Serve's context, stops that one
// listener without draining: other listeners keep serving the connections.
var ErrListenerRemoved = listen.ErrRemoved

// ProtocolManager accepts connections, identifies their protocol and routes
// them. Its methods are safe for concurrent use.
type ProtocolManager struct {
	optErr    error
	log       *slog.Logger
	capLog    *guard.RateLimitedLogger // refusals over max_connections
	bufs      *bufpool.Pools
	stats     *metrics.Stats
	guard     *guard.Guard
	conns     *conntrack.Set
	listeners *listen.Set
	loops     *evloop.Shared    // the event loops, while listeners use them
	udp       *udp.Engine       // the flows of udpListeners; closed with pm.ctx
	inherited *listen.Inherited // sockets an old process handed over, taken instead of bound
	status    *statusState      // the status page's state beside the counters (status.go)
	// udpListeners: server.listen_udp, served by udp once Start or StartUDP
	// ran.
	udpListeners *listen.PacketSet

	mu       sync.Mutex // guards the fields below it
	protos   []*protocols.Protocol
	closed   bool
	monitors [2]*monitor.Server // metrics, health
	// monitorAddrs are the monitors' addresses as given (an upgrade hands
	// their sockets over under them).
	monitorAddrs [2]string
	// listenFromConfig: Start was given no addresses, so each applied
	// configuration's server.listen is served.
	listenFromConfig bool
	// udpFromConfig: Start or StartUDP serves each applied configuration's
	// server.listen_udp.
	udpFromConfig bool
	holds         map[hold]upstream.Admin // targets an operator holds (status.go)
	upgradeNow    func() time.Time        // withUpgradeClock

	settings atomic.Pointer[settings]
	routing  atomic.Pointer[routing.Table]
	draining atomic.Bool
	serving  atomic.Int32 // listeners accepting now
	ctx      context.Context
	cancel   context.CancelFunc

	// cluster, set by a DistributedManager, adds its state to readiness:
	// ok false makes the instance unready; detail is shown in any case.
	cluster atomic.Pointer[func() (ok bool, detail string)]
}

// settings are the server: values a connection runs with; UpdateConfig
// swaps them whole.
type settings struct {
	config.Server
	trustedProxies config.Prefixes
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
	o := options{server: config.DefaultServer(), logger: slog.Default(), now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	pm := &ProtocolManager{log: o.logger, stats: metrics.New(), bufs: bufpool.New(), conns: conntrack.New(),
		capLog: guard.NewRateLimitedLogger(o.logger, 1, time.Now), status: newStatusState()}
	pm.ctx, pm.cancel = context.WithCancel(context.Background())
	pm.listeners = listen.NewSet(pm.Serve, func(addr string, err error) {
		if !errors.Is(err, ErrClosed) {
			pm.log.Error("listener failed", "addr", addr, "err", err)
		}
	})
	pm.settings.Store(&settings{Server: o.server})
	_ = pm.stats.RegisterState(pm.Draining, func() int64 { return pm.pool().ConnectionsCreated }, func() int64 { return pm.pool().ConnectionsReused })
	// The guard exists whatever the options: Close, Ban and GetMetrics use
	// it (its empty configuration is always valid).
	pm.guard, _ = guard.New(guard.Config{}, pm.log, nil)
	pm.inherited = o.inherited
	pm.upgradeNow = o.now
	pm.listeners.Inherit(o.inherited)
	uo := udp.ForManager(pm.ctx, pm.routing.Load, func() udp.Settings { return pm.settings.Load().Server.UDP() }, pm.guard, pm.stats.UDP, pm.log)
	uo.Loops = pm.udpLoops
	pm.udp = udp.New(uo)
	if o.holdUDP {
		pm.udp.Hold()
	}
	// The engine binds each address with all its sockets (SO_REUSEPORT).
	pm.udpListeners = listen.NewPacketSet(func(ctx context.Context, addr string) (net.PacketConn, error) {
		pc, err := pm.udp.BindSockets(ctx, addr)
		if err != nil {
			return nil, fmt.Errorf("protoplex: listen udp %s: %w", addr, err)
		}
		return pc, nil
	}, pm.udp.Serve, func(addr string, err error) {
		pm.log.Error("UDP listener failed", "addr", addr, "err", err)
	})
	pm.udpListeners.Inherit(o.inherited)
	pm.loops = &evloop.Shared{Env: evloop.Env{Ctx: pm.ctx, Log: pm.log, CapLog: pm.capLog, Stats: pm.stats, Guard: pm.guard,
		Conns: pm.conns, Bufs: pm.bufs, Routing: pm.routing.Load, SettleWait: DefaultSettleWait,
		Settings: func() (*config.Server, config.Prefixes) { s := pm.settings.Load(); return &s.Server, s.trustedProxies }}}
	if err := config.CheckServer(o.server); err != nil {
		return pm, err
	}
	pm.mu.Lock()
	defer pm.mu.Unlock()
	return pm, pm.rebuildLocked()
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

// CreateInternalProtocol builds a protocol with ctor and serves its
// connections in-process with handler instead of forwarding them. The conn
// handler receives replays the bytes read during identification first.
//
//	pm.AddProtocol(protoplex.CreateInternalProtocol(protocols.NewRedisProtocol, redisHandler))
func CreateInternalProtocol(ctor func(target string) *protocols.Protocol, handler func(net.Conn)) *protocols.Protocol {
	p := ctor("")
	p.Handler = handler
	return p
}

// Ban refuses new connections from ip for d, as the DDoS guard does (a
// cluster shares its members' bans this way).
func (pm *ProtocolManager) Ban(ip netip.Addr, d time.Duration) { pm.guard.Ban(ip, d) }

// Unban lifts a ban on ip (a shared ban's key deleted in etcd).
func (pm *ProtocolManager) Unban(ip netip.Addr) { pm.guard.Unban(ip) }

// OnBan registers fn to hear each ban this manager's DDoS guard issues
// (Ban's own calls excluded); it replaces an earlier fn.
func (pm *ProtocolManager) OnBan(fn func(ip netip.Addr, d time.Duration)) { pm.guard.SetOnBan(fn) }

// Draining reports whether the manager is shutting down.
func (pm *ProtocolManager) Draining() bool { return pm.draining.Load() }

// Serving reports whether at least one listener accepts connections.
func (pm *ProtocolManager) Serving() bool { return pm.serving.Load() > 0 }

// Close stops every listener, drains, and releases backends and monitoring
// servers.
func (pm *ProtocolManager) Close() error {
	pm.mu.Lock()
	if pm.closed {
		pm.mu.Unlock()
		return nil
	}
	pm.closed = true
	monitors := pm.monitors
	pm.mu.Unlock()
	pm.cancel()
	// Serve's drain runs in RunServer; if nothing serves, close stragglers.
	if pm.serving.Load() == 0 {
		pm.conns.CloseAll()
		pm.loops.Stop()
	}
	pm.guard.Close()
	if rt := pm.routing.Load(); rt != nil {
		rt.Close()
	}
	for _, m := range monitors {
		if m != nil {
			m.Close()
		}
	}
	pm.stopStatus()
	return nil
}

// rebuildLocked compiles pm.protos into a new routing snapshot and swaps it
// in. Backend sets of unchanged targets are reused so health state and warm
// pools survive.
func (pm *ProtocolManager) rebuildLocked() error {
	plan, err := pm.planLocked(pm.protos, pm.settings.Load())
	if err != nil {
		return err
	}
	pm.commitLocked(plan)
	return nil
}

// planLocked builds the routing of protos without changing anything.
func (pm *ProtocolManager) planLocked(protos []*protocols.Protocol, s *settings) (*routing.Plan, error) {
	plan, err := routing.Build(protos, s.CacheTTL, pm.routing.Load(), pm.stats, pm.log)
	if err != nil {
		return nil, fmt.Errorf("protoplex: %w", err)
	}
	return plan, nil
}

// commitLocked makes plan the live routing. It cannot fail.
func (pm *ProtocolManager) commitLocked(plan *routing.Plan) {
	rt := plan.Commit(pm.ctx)
	pm.applyHoldsLocked(rt) // before it serves: a held target takes no connection
	pm.routing.Store(rt)
}
