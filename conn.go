package protoplex

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/darkit/protoplex/internal/guard"
	"github.com/darkit/protoplex/internal/identify"
	"github.com/darkit/protoplex/internal/proxy"
)

// serveConn is the whole life of one client connection, top to bottom:
// accept → guard → identify → route → dial → copy.
func (pm *ProtocolManager) serveConn(c net.Conn) {
	start := time.Now()
	st := pm.stats
	st.accepted.Inc()
	s := pm.settings.Load()

	// Guard: global cap first, it costs nothing.
	if pm.conns.len() >= int64(s.maxConnections) {
		st.refuse(reasonMaxConnections)
		c.Close()
		return
	}
	pm.conns.add(c)
	defer pm.conns.remove(c)
	st.active.Inc()
	defer st.active.Dec()

	rt := pm.routing.Load()
	bp := pm.bufs.get(s.bufferSize)
	buf := (*bp)[:s.bufferSize]
	released := false
	release := func() {
		if !released {
			released = true
			pm.bufs.put(bp)
		}
	}
	defer release()

	client := c.RemoteAddr()
	prefilled := 0
	ip := guard.AddrOf(client)
	g := pm.guard
	if _, reason := g.Admit(ip); reason != guard.Allowed {
		st.refuse(reason.String())
		c.Close()
		return
	}
	defer g.Release(ip)

	// Identify.
	res := rt.table.Identify(c, buf, prefilled, identify.Limits{
		MinBytes:        s.identifyMinBytes,
		Timeout:         s.identifyTimeout,
		ReadTimeout:     s.readTimeout,
		ServerFirstWait: s.serverFirstWait,
		SettleWait:      s.settleWait,
	})
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
	rs := st.route(p.Name)
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
	ctx, cancel := context.WithTimeout(pm.ctx, s.dialTimeout)
	bc, target, done, err := be.dial(ctx)
	cancel()
	if err != nil {
		pm.log.Debug("dial failed", "protocol", p.Name, "client", client.String(), "err", err)
		st.closed(p.Name, "dial_error")
		c.Close()
		return
	}
	defer done()
	if res.N > 0 {
		if _, err := bc.Write(buf[:res.N]); err != nil {
			st.closed(p.Name, "error")
			c.Close()
			bc.Close()
			return
		}
	}
	replayed := int64(res.N)
	release() // the identify buffer is not held while the connection idles

	// Copy.
	idle := s.idleTimeout
	if p.IdleTimeout > 0 {
		idle = p.IdleTimeout
	}
	fs := proxy.Forward(c, bc, nil, idle, pm.draining.Load)
	rs.up.Add(float64(fs.Up + replayed))
	rs.down.Add(float64(fs.Down))
	st.closed(p.Name, fs.Reason.String())
	if pm.log.Enabled(context.Background(), slog.LevelDebug) {
		pm.log.Debug("connection closed", "client", client.String(), "protocol", p.Name, "target", target,
			"up", fs.Up+replayed, "down", fs.Down, "duration", time.Since(start), "reason", fs.Reason.String())
	}
}
