package protoplex

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/darkit/protoplex/internal/config"
	"github.com/darkit/protoplex/internal/evloop"
	"github.com/darkit/protoplex/internal/listen"
	"github.com/darkit/protoplex/internal/udp"
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
// — and serves them in the background until ctx ends or Close. A reload
// binds its new addresses before it is applied (one that cannot be bound
// rejects the reload) and starts them before it stops the removed ones, so
// no established connection is dropped (server.listen_udp is bound at Start
// only). Addrs tells what was bound; Wait returns after the drain.
func (pm *ProtocolManager) Start(ctx context.Context, addrs ...string) error {
	if pm.optErr != nil {
		return pm.optErr
	}
	pm.mu.Lock()
	if pm.closed {
		pm.mu.Unlock()
		return ErrClosed
	}
	if len(addrs) == 0 {
		pm.listenFromConfig = true
		addrs = pm.settings.Load().Listen
	}
	pm.mu.Unlock()
	if len(addrs) == 0 {
		return errors.New("protoplex: Start: no listen address (none given, none configured)")
	}
	return pm.udp.Start(ctx, pm.settings.Load().ListenUDP, func() error { return pm.listeners.Start(ctx, addrs) })
}

// Addrs returns the addresses Start serves now: TCP, then UDP (listen_udp).
// udpLoops is udp.Options.Loops: with data_plane events, each listen_udp
// address's sockets and flows run on the event loops, which they hold
// until they stop.
func (pm *ProtocolManager) udpLoops() ([]udp.Loop, func()) {
	s := pm.settings.Load()
	if s.DataPlane == config.DataPlaneGoroutines {
		return nil, nil
	}
	plane := pm.loops.Acquire(s.EventLoops)
	if plane == nil {
		return nil, nil
	}
	return plane.UDPLoops(), func() { pm.loops.Release(true) }
}

func (pm *ProtocolManager) Addrs() []net.Addr { return append(pm.listeners.Addrs(), pm.udp.Addrs()...) }

// Wait returns when every listener Start began has stopped and the
// connections have drained.
func (pm *ProtocolManager) Wait() { pm.listeners.Wait() }

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
