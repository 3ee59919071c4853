package protoplex

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/darkit/protoplex/internal/config"
	"github.com/darkit/protoplex/internal/evloop"
	"github.com/darkit/protoplex/internal/listen"
)

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

// Listen opens a listener for Serve: "host:port" (TCP, keepalive left to
// WithTCPKeepAlive: net.Listen would turn it on for every accepted
// connection, at four syscalls each) or "unix:/path" (a Unix socket).
func Listen(ctx context.Context, addr string) (net.Listener, error) { return listen.Open(ctx, addr) }

// Start binds addrs — or, when none are given, the server.listen addresses
// of the applied configuration, which later UpdateConfig calls then rebind
// — and the server.listen_udp addresses of the applied configuration
// (always rebound on reload), and serves them in the background until ctx
// ends or Close. When one address cannot be bound, none is served. A reload
// binds its new addresses before it is applied (one that cannot be bound
// rejects the reload) and starts them before it stops the removed ones, so
// no established connection is dropped. Addrs tells what was bound; Wait
// returns after the drain.
func (pm *ProtocolManager) Start(ctx context.Context, addrs ...string) error {
	if pm.optErr != nil {
		return pm.optErr
	}
	pm.mu.Lock()
	defer pm.mu.Unlock()
	if pm.closed {
		return ErrClosed
	}
	if len(addrs) == 0 {
		addrs = pm.settings.Load().Listen
		if len(addrs) == 0 {
			return errors.New("protoplex: Start: no listen address (none given, none configured)")
		}
		pm.listenFromConfig = true
	}
	return pm.startUDPLocked(ctx, nil, func() error { return pm.listeners.Start(ctx, addrs) })
}

// StartUDP serves the server.listen_udp addresses of the applied
// configuration, as Start does, without any stream listener (Serve takes
// those). Each of inherited, a UDP socket bound already (passed by socket
// activation), serves the listen_udp entry whose address it has; the other
// entries are bound. It fails, closing inherited, when a socket matches no
// entry or an entry cannot be bound. A later Start serves the same UDP
// sockets.
func (pm *ProtocolManager) StartUDP(ctx context.Context, inherited ...net.PacketConn) error {
	if pm.optErr != nil {
		closePackets(inherited)
		return pm.optErr
	}
	pm.mu.Lock()
	defer pm.mu.Unlock()
	if pm.closed {
		closePackets(inherited)
		return ErrClosed
	}
	return pm.startUDPLocked(ctx, inherited, func() error { return nil })
}

// startUDPLocked binds listen_udp (with the inherited sockets), then calls
// next; when both succeed it serves listen_udp and follows it on reload.
func (pm *ProtocolManager) startUDPLocked(ctx context.Context, inherited []net.PacketConn, next func() error) error {
	addrs := pm.settings.Load().ListenUDP
	if err := adopt(pm.udpListeners, addrs, inherited); err != nil {
		return err
	}
	if err := pm.udpListeners.Prepare(addrs); err != nil {
		return fmt.Errorf("protoplex: %w", err)
	}
	if err := next(); err != nil {
		pm.udpListeners.Release()
		return err
	}
	pm.udpFromConfig = true
	return pm.udpListeners.Start(ctx, addrs) // all bound: it cannot fail
}

// adopt gives each inherited socket to set as the socket of the address
// of addrs that names it (listen.Named). A socket none names is an error
// naming it; then every inherited socket is closed.
func adopt(set *listen.PacketSet, addrs []string, inherited []net.PacketConn) error {
	locals := make([]net.Addr, len(inherited))
	for i, pc := range inherited {
		locals[i] = pc.LocalAddr()
	}
	named := listen.Named(addrs, locals)
	for i, at := range named {
		if at < 0 {
			closePackets(inherited)
			return fmt.Errorf("protoplex: socket activation passed a UDP socket on %s that no server.listen_udp address names (server.listen_udp: %q): add it there, or remove it from the socket unit", locals[i], addrs)
		}
	}
	for i, at := range named {
		set.Adopt(addrs[at], inherited[i])
	}
	return nil
}

func closePackets(pcs []net.PacketConn) {
	for _, pc := range pcs {
		pc.Close()
	}
}

// Addrs returns the addresses Start serves now: TCP, then UDP (listen_udp).
func (pm *ProtocolManager) Addrs() []net.Addr {
	return append(pm.listeners.Addrs(), pm.udpListeners.Addrs()...)
}

// Wait returns when every listener Start began has stopped and the
// connections have drained.
func (pm *ProtocolManager) Wait() {
	pm.listeners.Wait()
	pm.udpListeners.Wait()
}

// Serve is RunServer on an existing listener (which it closes). When the
// last listener stops, the connections drain; a listener stopped with
// ErrListenerRemoved as its context's cause leaves them to the others.
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
	err, plane := evloop.ErrUnsupported, (*evloop.Plane)(nil)
	if s := pm.settings.Load(); s.DataPlane != config.DataPlaneGoroutines {
		plane = pm.loops.Acquire(s.EventLoops)
	}
	if plane != nil {
		// The loops accept until ctx or the manager ends.
		lctx, cancel := context.WithCancel(ctx)
		stopLoops := context.AfterFunc(pm.ctx, cancel)
		err = plane.Serve(lctx, ln)
		stopLoops()
		cancel()
	}
	if errors.Is(err, evloop.ErrUnsupported) {
		err = pm.acceptLoop(ln)
	}
	stop()
	stopMgr()
	last := pm.serving.Add(-1) == 0
	ln.Close()
	drained := last && !errors.Is(context.Cause(ctx), ErrListenerRemoved)
	if drained {
		pm.drain()
	}
	if plane != nil {
		pm.loops.Release(drained)
	}
	if pm.ctx.Err() != nil || ctx.Err() != nil {
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
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
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

// drain waits for active connections to finish, up to the graceful
// shutdown timeout, then closes the rest and waits for them to go.
func (pm *ProtocolManager) drain() {
	pm.draining.Store(true)
	defer pm.draining.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), pm.settings.Load().GracefulShutdownTimeout)
	defer cancel()
	if pm.conns.Wait(ctx) == nil {
		return
	}
	pm.log.Info("drain deadline reached, closing connections", "count", pm.conns.Len())
	pm.conns.CloseAll()
	_ = pm.conns.Wait(context.Background())
}
