package protoplex

import (
	"cmp"
	"context"
	"net"
	"time"

	"github.com/darkit/protoplex/internal/guard"
	"github.com/darkit/protoplex/internal/identify"
	"github.com/darkit/protoplex/internal/logging"
	"github.com/darkit/protoplex/internal/metrics"
	"github.com/darkit/protoplex/internal/proxy"
	"github.com/darkit/protoplex/internal/proxyproto"
)

// serveConn is the whole life of one client connection, top to bottom:
// accept → guard → PROXY in → identify → route → dial → forward. Every
// refusal returns through refuse, which counts its reason and closes. acc
// collects the connection's access line (written at the end, at INFO with
// server.access_log, else at DEBUG) and writes the open line once the
// backend connected (server.access_log_open).
func (pm *ProtocolManager) serveConn(c net.Conn) {
	st := pm.stats
	st.Accepted.Inc()
	s := pm.settings.Load()
	acc := logging.NewAccess(pm.log, logging.AccessMode{Close: s.AccessLog, Open: s.AccessLogOpen}, c.RemoteAddr())
	defer acc.Log()
	refuse := func(reason string) { st.Refuse(reason); acc.Refused(reason); c.Close() }

	// Guard: the global cap first, it costs nothing.
	if !pm.conns.Add(c, s.MaxConnections) {
		pm.capLog.Warn("connection refused: max_connections reached", "max_connections", s.MaxConnections)
		refuse(metrics.RefusedMaxConnections)
		return
	}
	defer pm.conns.Remove(c)
	st.Active.Inc()
	defer st.Active.Dec()
	if tc, ok := c.(*net.TCPConn); ok && s.TCPKeepAlive > 0 {
		_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: s.TCPKeepAlive, Interval: s.TCPKeepAlive, Count: 9})
	}
	buf := pm.bufs.Lease(max(s.BufferSize, identify.MinBuffer)) // room for a whole TLS record
	defer buf.Release()

	// PROXY in: a trusted front load balancer names the real client; the
	// guard, logs and PROXY towards backends all use it.
	prefilled := 0
	fromTrusted := s.AcceptProxy && s.trustedProxies.Contains(guard.AddrOf(acc.Client))
	if fromTrusted {
		h, rest, err := proxyproto.Read(c, buf.B, s.IdentifyTimeout)
		if err != nil {
			refuse(metrics.RefusedProxyHeader)
			return
		}
		if !h.Local {
			acc.Client = net.TCPAddrFromAddrPort(h.Source)
		}
		prefilled = rest
	}
	ip := guard.AddrOf(acc.Client)
	ticket, reason := pm.guard.Admit(ip)
	if reason != guard.Allowed {
		refuse(reason.String())
		return
	}
	defer pm.guard.Release(ticket)

	// Identify.
	rt := pm.routing.Load()
	res := rt.Identify.Identify(c, buf.B, prefilled, identify.Limits{
		MinBytes:        s.IdentifyMinBytes,
		Timeout:         s.IdentifyTimeout,
		ReadTimeout:     s.IdentifyReadTimeout,
		ServerFirstWait: s.ServerFirstWait,
		SettleWait:      DefaultSettleWait,
	})
	if s.AcceptProxy && !fromTrusted && res.N > 0 && proxyproto.Claims(buf.B[:res.N]) {
		refuse(metrics.RefusedProxyHeader) // an untrusted source must not claim another's address
		return
	}
	if res.Failure != identify.OK && !res.Fallback { // the fallback route is normal traffic
		st.IdentifyFailed(res.Failure)
		if res.Failure != identify.ClientClosed || res.N > 0 {
			pm.guard.IdentifyFailed(ip) // feeds the DDoS guard
		}
	}
	if res.Route == nil {
		acc.Unidentified(res)
		c.Close()
		return
	}

	// Route.
	e := rt.Entries[res.Route.Index]
	e.Stats.Identify(time.Since(acc.Start))
	acc.Routed(e.Proto, e.Label, res, buf.B[:res.N])
	if h := e.Proto.Handler; h != nil {
		rc := proxy.NewReplayConn(c, buf.B[:res.N])
		buf.Release()
		acc.Opened("")
		h(rc)
		return
	}

	// Dial.
	ctx, cancel := context.WithTimeout(pm.ctx, s.DialTimeout)
	pm.conns.Dialing(c, cancel) // a drain's close-all cancels the dial too
	bc, target, done, err := e.Backend.Dial(ctx, acc.Client, c.LocalAddr())
	cancel()
	if err != nil { // each failed target is logged by its backend set
		acc.DialFailed(err)
		e.Stats.DialError.Inc()
		c.Close()
		return
	}
	defer done()
	pm.conns.Attach(c, bc)
	acc.Opened(target)

	// Forward: the bytes identification read go first, then both
	// directions are copied; the identification buffer goes back as soon
	// as the replay is written, so an idle connection holds none.
	fs := proxy.Forward(c, bc, proxy.Options{
		Replay:        buf.B[:res.N],
		ReplayTimeout: s.DialTimeout,
		ReplayDone:    buf.Release,
		Idle:          cmp.Or(e.Proto.IdleTimeout, s.IdleTimeout), // the route's own, else the server's
		Aborted:       pm.draining.Load,
	})
	st.Forwarded(e.Stats, fs)
	e.Backend.Forwarded(target, fs.Up, fs.Down)
	acc.Forwarded(target, fs)
}
