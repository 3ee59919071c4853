package protoplex

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/darkit/protoplex/internal/guard"
	"github.com/darkit/protoplex/internal/identify"
	"github.com/darkit/protoplex/internal/proxy"
	"github.com/darkit/protoplex/internal/upstream"
	"github.com/darkit/protoplex/protocols"
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
		var ok bool
		if client, prefilled, ok = readProxyHeader(c, buf, s.IdentifyTimeout); !ok {
			st.refuse(reasonProxyHeader)
			c.Close()
			return
		}
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
		// An untrusted source must not claim another's address.
		if _, _, _, r := upstream.ParseProxyHeader(buf[:res.N]); r != protocols.NoMatch {
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
	if res.N > 0 {
		// A backend that accepts but never reads must not hold the replay
		// (and the identification buffer) forever.
		_ = bc.SetWriteDeadline(time.Now().Add(s.DialTimeout))
		_, err := bc.Write(buf[:res.N])
		_ = bc.SetWriteDeadline(time.Time{})
		if err != nil {
			rs.closed[proxy.Error].Inc()
			c.Close()
			bc.Close()
			return
		}
	}
	replayed := int64(res.N)
	release() // the identify buffer is not held while the connection idles

	// Copy.
	idle := s.IdleTimeout
	if p.IdleTimeout > 0 {
		idle = p.IdleTimeout
	}
	fs := proxy.Forward(c, bc, nil, idle, pm.draining.Load)
	rs.up.Add(float64(fs.Up + replayed))
	rs.down.Add(float64(fs.Down))
	rs.closed[fs.Reason].Inc()
	if fs.PipeFallbacks > 0 {
		st.pipeFallbacks.Add(float64(fs.PipeFallbacks))
	}
	if pm.log.Enabled(context.Background(), slog.LevelDebug) {
		pm.log.Debug("connection closed", "client", client.String(), "protocol", p.Name, "target", target,
			"up", fs.Up+replayed, "down", fs.Down, "duration", time.Since(start), "reason", fs.Reason.String())
	}
}

// readProxyHeader reads a PROXY v1/v2 header from a trusted front into buf.
// It returns the client address the header names and how many bytes after
// it are already in buf (moved to its start).
func readProxyHeader(c net.Conn, buf []byte, timeout time.Duration) (net.Addr, int, bool) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	n := 0
	for n < len(buf) {
		m, err := c.Read(buf[n:])
		n += m
		src, _, hlen, res := upstream.ParseProxyHeader(buf[:n])
		switch res {
		case protocols.Match:
			rest := copy(buf, buf[hlen:n])
			if !src.IsValid() { // LOCAL/UNKNOWN: the front's own health check
				return c.RemoteAddr(), rest, true
			}
			return net.TCPAddrFromAddrPort(src), rest, true
		case protocols.NoMatch:
			return nil, 0, false
		}
		if err != nil || upstream.ProxyHeaderLen(buf[:n]) > len(buf) { // announced longer than it can ever be read
			return nil, 0, false
		}
	}
	return nil, 0, false
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
