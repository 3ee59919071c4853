package protoplex

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// monitorLimits bound what a client of the /metrics or /health port can
// hold: these ports must never take the file descriptors or goroutines the
// data port needs (docs/security.md).
type monitorLimits struct {
	readHeaderTimeout time.Duration // request line and headers
	readTimeout       time.Duration // the whole request
	writeTimeout      time.Duration // the whole response (a /metrics scrape)
	idleTimeout       time.Duration // a keep-alive connection between requests
	maxHeaderBytes    int
	maxConns          int // concurrent connections per monitoring listener
}

var defaultMonitorLimits = monitorLimits{
	readHeaderTimeout: 5 * time.Second,
	readTimeout:       5 * time.Second,
	writeTimeout:      10 * time.Second,
	idleTimeout:       30 * time.Second,
	maxHeaderBytes:    8 << 10,
	maxConns:          64,
}

// monitorServer is one running /metrics or /health server.
type monitorServer struct {
	srv *http.Server
	ln  *capListener
}

// serveMonitor listens on addr and serves h within lim until close.
func serveMonitor(addr string, h http.Handler, lim monitorLimits) (*monitorServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: lim.readHeaderTimeout,
		ReadTimeout:       lim.readTimeout,
		WriteTimeout:      lim.writeTimeout,
		IdleTimeout:       lim.idleTimeout,
		MaxHeaderBytes:    lim.maxHeaderBytes,
	}
	cl := &capListener{Listener: ln, slots: make(chan struct{}, lim.maxConns)}
	go srv.Serve(cl)
	return &monitorServer{srv: srv, ln: cl}, nil
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

// capListener admits at most cap(slots) connections at a time and closes
// the ones over it as soon as they are accepted. Closing (rather than
// blocking Accept, as netutil.LimitListener does) keeps the kernel's accept
// queue drained, so a flood costs one fd for an instant and not a queue of
// connections that reach the handler seconds later, and a prober learns at
// once that the port is saturated instead of timing out.
type capListener struct {
	net.Listener
	slots   chan struct{}
	refused atomic.Int64
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return &slotConn{Conn: c, free: l.free}, nil
		default:
			l.refused.Add(1)
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // reset: no TIME_WAIT left behind per refused connection
			}
			c.Close()
		}
	}
}

func (l *capListener) free() { <-l.slots }

// active returns how many connections hold a slot.
func (l *capListener) active() int { return len(l.slots) }

// slotConn gives its slot back on the first Close.
type slotConn struct {
	net.Conn
	once sync.Once
	free func()
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.free)
	return err
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
