// Package monitor serves the monitoring ports (/metrics, /health) within
// bounds: these ports must never take the file descriptors or goroutines
// the data port needs, and one client must not lock the probes out
// (docs/security.md).
package monitor

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Limits bound what a client of a monitoring port can hold.
type Limits struct {
	ReadHeaderTimeout time.Duration // request line and headers
	ReadTimeout       time.Duration // the whole request
	WriteTimeout      time.Duration // the whole response (a /metrics scrape)
	IdleTimeout       time.Duration // a keep-alive connection between requests
	MaxHeaderBytes    int
	MaxConns          int // concurrent connections per listener
	MaxConnsPerSource int // of those, from one source (IPv4 address or IPv6 /64)
}

// DefaultLimits returns the limits of every monitoring port: 64 concurrent
// connections, 8 of them per source, 3 s to read a request header and 5 s
// the whole request, 10 s to write a reply, 30 s idle between keep-alive
// requests, 8 KiB of headers.
func DefaultLimits() Limits {
	return Limits{
		ReadHeaderTimeout: 3 * time.Second,
		ReadTimeout:       5 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    8 << 10,
		MaxConns:          64,
		MaxConnsPerSource: 8,
	}
}

// Server is one running monitoring server.
type Server struct {
	srv *http.Server
	ln  *listener
}

// Serve listens on addr (TCP) and serves h within lim until Close.
func Serve(addr string, h http.Handler, lim Limits) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return ServeListener(ln, h, lim), nil
}

// ServeListener serves h on ln (a socket bound elsewhere: an upgrade's)
// within lim until Close, which closes ln.
func ServeListener(ln net.Listener, h http.Handler, lim Limits) *Server {
	ml := newListener(ln, lim.MaxConns, lim.MaxConnsPerSource)
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		ReadTimeout:       lim.ReadTimeout,
		WriteTimeout:      lim.WriteTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    lim.MaxHeaderBytes,
		ConnState:         ml.connState,
	}
	go srv.Serve(ml) // returns once Close has closed the listener
	return &Server{srv: srv, ln: ml}
}

// Listener is the listening socket the server accepts on.
func (s *Server) Listener() net.Listener { return s.ln.Listener }

// Addr returns the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Limits returns the limits the server applies.
func (s *Server) Limits() Limits {
	return Limits{
		ReadHeaderTimeout: s.srv.ReadHeaderTimeout,
		ReadTimeout:       s.srv.ReadTimeout,
		WriteTimeout:      s.srv.WriteTimeout,
		IdleTimeout:       s.srv.IdleTimeout,
		MaxHeaderBytes:    s.srv.MaxHeaderBytes,
		MaxConns:          s.ln.maxConns,
		MaxConnsPerSource: s.ln.maxPerSource,
	}
}

// CloseGrace is how long Close lets requests in flight finish. It is short:
// a probe or a scrape is answered in milliseconds, and Close runs when the
// process stops, after the data port's drain, whose deadline the operator
// set; a client that holds a connection mid-request (a TCP probe that never
// sends, a slow header) must not push the exit past that deadline.
const CloseGrace = 50 * time.Millisecond

// Close stops accepting, lets requests in flight finish for CloseGrace,
// then closes whatever is left, idle or not. It returns the listener's
// close error, if any; a second Close does nothing and returns nil.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), CloseGrace)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return s.srv.Close()
	}
	return err
}

// Active returns how many connections hold a slot.
func (s *Server) Active() int {
	s.ln.mu.Lock()
	defer s.ln.mu.Unlock()
	return len(s.ln.conns)
}

// Idle returns how many of the connections holding a slot are idle between
// keep-alive requests.
func (s *Server) Idle() int {
	s.ln.mu.Lock()
	defer s.ln.mu.Unlock()
	n := 0
	for c := range s.ln.conns {
		if c.idle {
			n++
		}
	}
	return n
}

// Refused returns how many connections were closed as soon as accepted
// because no slot could be had.
func (s *Server) Refused() int64 { return s.ln.refused.Load() }

// Evicted returns how many connections were closed to make room for a
// newcomer.
func (s *Server) Evicted() int64 { return s.ln.evicted.Load() }

// listener admits at most maxConns connections at a time, at most
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
type listener struct {
	net.Listener
	maxConns, maxPerSource int

	mu        sync.Mutex
	conns     map[*conn]struct{}
	perSource map[netip.Addr]int
	clock     uint64 // orders connections by their last activity

	refused atomic.Int64
	evicted atomic.Int64
}

func newListener(ln net.Listener, maxConns, maxPerSource int) *listener {
	return &listener{
		Listener:     ln,
		maxConns:     maxConns,
		maxPerSource: maxPerSource,
		conns:        make(map[*conn]struct{}, maxConns),
		perSource:    make(map[netip.Addr]int),
	}
}

// conn is an admitted connection. Its fields other than Conn, l and source
// are guarded by the listener's mu.
type conn struct {
	net.Conn
	l          *listener
	source     netip.Addr
	idle       bool   // between requests, nothing of the next one received
	lastActive uint64 // l.clock when it last started or finished a request
	admitted   bool
}

func (l *listener) Accept() (net.Conn, error) {
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
func (l *listener) admit(c net.Conn) *conn {
	src := sourceOf(c.RemoteAddr())
	l.mu.Lock()
	n := l.perSource[src]
	if n >= l.maxPerSource {
		l.mu.Unlock()
		return nil
	}
	var victim *conn
	if len(l.conns) >= l.maxConns {
		if victim = l.victimFor(n); victim == nil {
			l.mu.Unlock()
			return nil
		}
		l.releaseLocked(victim)
	}
	mc := &conn{Conn: c, l: l, source: src, admitted: true}
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
func (l *listener) victimFor(have int) *conn {
	var idlest, largest *conn
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

func (l *listener) releaseLocked(c *conn) {
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
func (l *listener) connState(nc net.Conn, st http.ConnState) {
	c, ok := nc.(*conn)
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
func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.l.mu.Lock()
		c.idle = false
		c.l.mu.Unlock()
	}
	return n, err
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.l.mu.Lock()
	c.l.releaseLocked(c)
	c.l.mu.Unlock()
	return err
}

// sourceOf is the unit a connection is counted against: the address for
// IPv4, its /64 for IPv6, as for the data port's guard.
func sourceOf(a net.Addr) netip.Addr {
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
