package protoplex

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/darkit/protoplex/internal/guard"
	"github.com/darkit/protoplex/internal/identify"
	"github.com/darkit/protoplex/internal/proxy"
	"github.com/darkit/protoplex/internal/proxyproto"
)

// serveConn is the whole life of one client connection, top to bottom:
// accept → guard → identify → route → dial → copy.
func (pm *ProtocolManager) serveConn(c net.Conn) {
	start := time.Now()
	st := pm.stats
	st.accepted.Inc()
	s := pm.settings.Load()

	// Guard: global cap first, it costs nothing.
	if pm.conns.len() >= int64(s.MaxConnections) {
		st.refuse(reasonMaxConnections)
		c.Close()
		return
	}
	pm.conns.add(c)
	defer pm.conns.remove(c)
	if s.TCPKeepAlive > 0 {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: s.TCPKeepAlive, Interval: s.TCPKeepAlive, Count: 9})
		}
	}
	st.active.Inc()
	defer st.active.Dec()

	rt := pm.routing.Load()
	bufSize := max(s.BufferSize, identify.MinBuffer)
	bp := pm.bufs.get(bufSize)
	buf := (*bp)[:bufSize]
	released := false
	release := func() {
		if !released {
			released = true
			pm.bufs.put(bp)
		}
	}
	defer release()

	// A trusted front load balancer tells the real client address in a PROXY
	// header; everything below (security, logs, PROXY towards backends) uses it.
	client := c.RemoteAddr()
	prefilled := 0
	fromTrusted := s.AcceptProxy && trusted(s.trustedProxies, client)
	if fromTrusted {
		h, rest, err := proxyproto.Read(c, buf, s.IdentifyTimeout)
		if err != nil {
			st.refuse(reasonProxyHeader)
			c.Close()
			return
		}
		if !h.Local { // LOCAL/UNKNOWN: the front's own connection (health check)
			client = net.TCPAddrFromAddrPort(h.Source)
		}
		prefilled = rest
	}
	ip := guard.AddrOf(client)
	g := pm.guard
	ticket, reason := g.Admit(ip)
	if reason != guard.Allowed {
		st.refuse(reason.String())
		c.Close()
		return
	}
	defer g.Release(ticket)

	// Identify.
	res := rt.table.Identify(c, buf, prefilled, identify.Limits{
		MinBytes:        s.IdentifyMinBytes,
		Timeout:         s.IdentifyTimeout,
		ReadTimeout:     s.IdentifyReadTimeout,
		ServerFirstWait: s.ServerFirstWait,
		SettleWait:      DefaultSettleWait,
	})
	if s.AcceptProxy && res.N > 0 && prefilled == 0 && !fromTrusted {
		// An untrusted source must not claim another's address: whatever
		// begins like a PROXY header is refused.
		if _, _, err := proxyproto.Parse(buf[:res.N]); !errors.Is(err, proxyproto.ErrNotProxy) {
			st.refuse(reasonProxyHeader)
			c.Close()
			return
		}
	}
	if res.Failure != identify.OK {
		st.identifyFailed(res.Failure)
		if res.Failure != identify.ClientClosed || res.N > 0 {
			g.IdentifyFailed(ip) // feeds the DDoS guard
		}
	}
	if res.Route == nil {
		pm.log.Debug("connection not identified", "client", client.String(), "reason", res.Failure.String(), "bytes", res.N)
		c.Close()
		return
	}
	route := res.Route
	p := route.Proto
	rs := rt.stats[route.Index]
	rs.identified.Inc()
	rs.count.Add(1)
	rs.identifyDuration.Observe(time.Since(start).Seconds())

	// Route: in-process handler.
	if p.Handler != nil {
		rc := proxy.NewReplayConn(c, buf[:res.N])
		release()
		p.Handler(rc)
		return
	}

	// Dial.
	be := rt.backends[route.Index]
	ctx, cancel := context.WithTimeout(pm.ctx, s.DialTimeout)
	bc, target, done, err := be.Dial(ctx, client, c.LocalAddr())
	cancel()
	if err != nil {
		pm.log.Debug("dial failed", "protocol", p.Name, "client", client.String(), "err", err)
		rs.dialError.Inc()
		c.Close()
		return
	}
	defer done()
	pm.conns.attach(c, bc)

	// Copy: the bytes identification consumed first.
	idle := s.IdleTimeout
	if p.IdleTimeout > 0 {
		idle = p.IdleTimeout
	}
	fs := proxy.Forward(c, bc, proxy.Options{
		Replay:        buf[:res.N],
		ReplayTimeout: s.DialTimeout, // a backend that accepts but never reads must not hold the replay
		ReplayDone:    release,       // the identify buffer is not held while the connection idles
		Idle:          idle,
		Aborted:       pm.draining.Load,
	})
	rs.up.Add(float64(fs.Up))
	rs.down.Add(float64(fs.Down))
	rs.closed[fs.Reason].Inc()
	if fs.PipeFallbacks > 0 {
		st.pipeFallbacks.Add(float64(fs.PipeFallbacks))
	}
	if pm.log.Enabled(context.Background(), slog.LevelDebug) {
		pm.log.Debug("connection closed", "client", client.String(), "protocol", p.Name, "target", target,
			"up", fs.Up, "down", fs.Down, "duration", time.Since(start), "reason", fs.Reason.String())
	}
}

func trusted(prefixes []netip.Prefix, a net.Addr) bool {
	ip := guard.AddrOf(a)
	for _, p := range prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
