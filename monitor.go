package protoplex

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// monitorLimits bound what a client of the /metrics or /health port can
// hold: these ports must never take the file descriptors or goroutines the
// data port needs, and one client must not lock the probes out
// (docs/security.md).
type monitorLimits struct {
	readHeaderTimeout time.Duration // request line and headers
	readTimeout       time.Duration // the whole request
	writeTimeout      time.Duration // the whole response (a /metrics scrape)
	idleTimeout       time.Duration // a keep-alive connection between requests
	maxHeaderBytes    int
	maxConns          int // concurrent connections per monitoring listener
	maxConnsPerSource int // of those, from one source (IPv4 address or IPv6 /64)
}

var defaultMonitorLimits = monitorLimits{
	readHeaderTimeout: 3 * time.Second,
	readTimeout:       5 * time.Second,
	writeTimeout:      10 * time.Second,
	idleTimeout:       30 * time.Second,
	maxHeaderBytes:    8 << 10,
	maxConns:          64,
	maxConnsPerSource: 8,
}

// monitorServer is one running /metrics or /health server.
type monitorServer struct {
	srv *http.Server
	ln  *monitorListener
}

// serveMonitor listens on addr and serves h within lim until close.
func serveMonitor(addr string, h http.Handler, lim monitorLimits) (*monitorServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	ml := newMonitorListener(ln, lim.maxConns, lim.maxConnsPerSource)
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: lim.readHeaderTimeout,
		ReadTimeout:       lim.readTimeout,
		WriteTimeout:      lim.writeTimeout,
		IdleTimeout:       lim.idleTimeout,
		MaxHeaderBytes:    lim.maxHeaderBytes,
		ConnState:         ml.connState,
	}
	go srv.Serve(ml)
	return &monitorServer{srv: srv, ln: ml}, nil
}

func (m *monitorServer) addr() string { return m.ln.Addr().String() }

// close stops accepting, lets requests in flight finish for a second, then
// closes whatever is left.
func (m *monitorServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := m.srv.Shutdown(ctx); err != nil {
		_ = m.srv.Close()
	}
}

// monitorListener admits at most maxConns connections at a time, at most
// maxPerSource of them from one source. A connection it cannot admit is
// reset as soon as it is accepted (rather than left in the kernel's accept
// queue, as netutil.LimitListener does): a flood costs one fd for an
// instant, and a prober learns at once that the port is saturated.
//
// When the port is full, a newcomer takes the slot of, in this order:
//  1. the connection idle the longest between keep-alive requests: it costs
//     its client a reconnect;
//  2. the least recently active connection of the source holding the most,
//     if that source holds at least two more than the newcomer's: so only
//     as many sources as the port has slots can keep a probe out.
//
// Otherwise it is refused.
type monitorListener struct {
	net.Listener
	maxConns, maxPerSource int

	mu        sync.Mutex
	conns     map[*monitorConn]struct{}
	perSource map[netip.Addr]int
	clock     uint64 // orders connections by their last activity

	refused atomic.Int64
	evicted atomic.Int64
}

func newMonitorListener(ln net.Listener, maxConns, maxPerSource int) *monitorListener {
	return &monitorListener{
		Listener:     ln,
		maxConns:     maxConns,
		maxPerSource: maxPerSource,
		conns:        make(map[*monitorConn]struct{}, maxConns),
		perSource:    make(map[netip.Addr]int),
	}
}

// monitorConn is an admitted connection. Its fields other than Conn and
// source are guarded by the listener's mu.
type monitorConn struct {
	net.Conn
	l          *monitorListener
	source     netip.Addr
	idle       bool   // between requests, nothing of the next one received
	lastActive uint64 // l.clock when it last started or finished a request
	admitted   bool
}

func (l *monitorListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if mc := l.admit(c); mc != nil {
			return mc, nil
		}
		l.refused.Add(1)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // reset: no TIME_WAIT left behind per refused connection
		}
		c.Close()
	}
}

// admit counts c in, making room if it must, or returns nil.
func (l *monitorListener) admit(c net.Conn) *monitorConn {
	src := monitorSource(c.RemoteAddr())
	l.mu.Lock()
	n := l.perSource[src]
	if n >= l.maxPerSource {
		l.mu.Unlock()
		return nil
	}
	var victim *monitorConn
	if len(l.conns) >= l.maxConns {
		if victim = l.victimFor(n); victim == nil {
			l.mu.Unlock()
			return nil
		}
		l.releaseLocked(victim)
	}
	mc := &monitorConn{Conn: c, l: l, source: src, admitted: true}
	l.clock++
	mc.lastActive = l.clock
	l.conns[mc] = struct{}{}
	l.perSource[src]++
	l.mu.Unlock()
	if victim != nil {
		l.evicted.Add(1)
		// The server's goroutine for it sees the close and ends; its slot
		// is already the newcomer's.
		victim.Conn.Close()
	}
	return mc
}

// victimFor picks the connection to close for a newcomer whose source
// already holds have connections, or nil; a scan of at most maxConns.
func (l *monitorListener) victimFor(have int) *monitorConn {
	var idlest, largest *monitorConn
	for c := range l.conns {
		if c.idle && (idlest == nil || c.lastActive < idlest.lastActive) {
			idlest = c
		}
		if n := l.perSource[c.source]; n >= have+2 {
			if largest == nil {
				largest = c
			} else if m := l.perSource[largest.source]; n > m || (n == m && c.lastActive < largest.lastActive) {
				largest = c
			}
		}
	}
	if idlest != nil {
		return idlest
	}
	return largest
}

func (l *monitorListener) releaseLocked(c *monitorConn) {
	if !c.admitted {
		return
	}
	c.admitted = false
	delete(l.conns, c)
	if l.perSource[c.source]--; l.perSource[c.source] <= 0 {
		delete(l.perSource, c.source)
	}
}

// connState follows the server's view of each connection: idle between
// keep-alive requests, busy otherwise (reading a header, or serving).
func (l *monitorListener) connState(nc net.Conn, st http.ConnState) {
	c, ok := nc.(*monitorConn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch st {
	case http.StateActive, http.StateIdle:
		c.idle = st == http.StateIdle
		l.clock++
		c.lastActive = l.clock
	case http.StateHijacked, http.StateClosed:
		l.releaseLocked(c)
	}
}

// Read marks an idle connection busy as soon as its next request starts
// arriving: the server reports it active only once the header is complete.
func (c *monitorConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.l.mu.Lock()
		c.idle = false
		c.l.mu.Unlock()
	}
	return n, err
}

func (c *monitorConn) Close() error {
	err := c.Conn.Close()
	c.l.mu.Lock()
	c.l.releaseLocked(c)
	c.l.mu.Unlock()
	return err
}

// active returns how many connections hold a slot.
func (l *monitorListener) active() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// idle returns how many of them are idle between keep-alive requests.
func (l *monitorListener) idle() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for c := range l.conns {
		if c.idle {
			n++
		}
	}
	return n
}

// monitorSource is the unit a connection is counted against: the address
// for IPv4, its /64 for IPv6, as for the data port's guard.
func monitorSource(a net.Addr) netip.Addr {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Addr{}
	}
	ip := ta.AddrPort().Addr().Unmap()
	if ip.Is6() {
		if p, err := ip.WithZone("").Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return ip
}

// errMonitorRunning is returned when a monitoring server is started twice.
func errMonitorRunning(what string) error {
	return errors.New("protoplex: " + what + " already running")
}

// startMonitor starts a server in *slot (pm.prom or pm.health) unless one
// runs there already.
func (pm *ProtocolManager) startMonitor(slot **promExporter, what, addr string, h http.Handler, lim monitorLimits) (string, error) {
	pm.mu.Lock()
	running := *slot != nil
	pm.mu.Unlock()
	if running {
		return "", errMonitorRunning(what)
	}
	m, err := serveMonitor(addr, h, lim)
	if err != nil {
		return "", fmt.Errorf("protoplex: %s listener: %w", what, err)
	}
	pm.mu.Lock()
	if *slot != nil {
		pm.mu.Unlock()
		m.close()
		return "", errMonitorRunning(what)
	}
	*slot = &promExporter{m}
	pm.mu.Unlock()
	return m.addr(), nil
}
