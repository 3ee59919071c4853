package protoplex

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/darkit/protoplex/protocols"
)

// keepAliveProbe sends one HTTP/1.1 request on c and reads the reply,
// leaving the connection open for another.
func keepAliveProbe(c net.Conn, path string) (*http.Response, error) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: probe\r\n\r\n"); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, err
}

func openFDs(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(fds)
}

// TestMonitoringPortsCapConnections: 200 keep-alive clients of the health
// (or metrics) port from 25 sources, each holding its connection idle after one request,
// get at most 64 connections at a time; the rest are closed at once, the
// process holds no more than 64 server-side sockets for them, and the data
// port keeps serving.
func TestMonitoringPortsCapConnections(t *testing.T) {
	for _, port := range []struct {
		name, path string
		start      func(pm *ProtocolManager) (string, error)
	}{
		{"health", "/health/live", func(pm *ProtocolManager) (string, error) { return pm.ServeHealth("127.0.0.1:0") }},
		{"metrics", "/metrics", func(pm *ProtocolManager) (string, error) {
			if err := pm.ServeMetrics("127.0.0.1:0"); err != nil {
				return "", err
			}
			return pm.MetricsAddr(), nil
		}},
	} {
		t.Run(port.name, func(t *testing.T) {
			pm := NewProtocolManager(WithLogger(discardLogger()))
			pm.AddProtocol(protocols.NewSSHProtocol(bannerServer(t, "ssh:")))
			data := serveTest(t, pm)
			mon, err := port.start(pm)
			if err != nil {
				t.Fatal(err)
			}
			const clients = 200
			fdsBefore := openFDs(t)
			// A connection over the cap is reset at once, sometimes before
			// the dial returns.
			var conns []net.Conn
			for i := range clients {
				if c, err := dialFrom(byte(1+i%25), mon); err == nil { // 25 sources, more than their share each
					defer c.Close()
					conns = append(conns, c)
				}
			}
			var (
				wg     sync.WaitGroup
				mu     sync.Mutex
				served int
			)
			for _, c := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if resp, err := keepAliveProbe(c, port.path); err == nil && resp.StatusCode == 200 {
						mu.Lock()
						served++
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			// Under load the server's accept loop lags the dials, so it may
			// still be accepting while the first probes are answered: a late
			// connection then takes the slot of one idle since its reply,
			// which is closed (evicted). So more than 64 can be served, but
			// each one past 64 evicted one served before it.
			ln := monitorOf(pm, port.name == "health")
			limit := defaultMonitorLimits.maxConns
			if held := ln.active(); held > limit {
				t.Fatalf("the %s port holds %d connections, cap %d", port.name, held, limit)
			}
			if evicted := int(ln.evicted.Load()); served > limit+evicted || served == 0 {
				t.Fatalf("%d of %d idle keep-alive clients served with %d evicted, want 1..%d", served, clients, evicted, limit+evicted)
			}
			if held := openFDs(t) - fdsBefore - len(conns); held > defaultMonitorLimits.maxConns+8 {
				t.Fatalf("the %s port holds %d sockets for %d idle clients", port.name, held, clients)
			}
			if got := roundTrip(t, data, "SSH-2.0-x\r\n"); got != "ssh:SSH-2.0-x\r\n" {
				t.Fatalf("data port: %q", got)
			}
		})
	}
}

// monitorOf returns the running health or metrics server's listener.
func monitorOf(pm *ProtocolManager, health bool) *monitorListener {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	if health {
		return pm.health.ln
	}
	return pm.prom.ln
}

// TestHealthPortRecoversWhenIdleClientsTimeOut: with the cap taken by
// clients that never send a request, a fresh probe is turned away at once
// (not queued), and answered again once the server has timed them out.
func TestHealthPortRecoversWhenIdleClientsTimeOut(t *testing.T) {
	lim := defaultMonitorLimits
	lim.maxConns = 4
	lim.readHeaderTimeout = time.Hour // the cap stays taken until the clients go
	pm := NewProtocolManager(WithLogger(discardLogger()))
	defer pm.Close()
	mon, err := pm.serveHealthWith("127.0.0.1:0", lim)
	if err != nil {
		t.Fatal(err)
	}
	ln := monitorOf(pm, true)
	var idle []net.Conn
	for i := 0; i < 10; i++ {
		if c, err := net.Dial("tcp", mon); err == nil { // over the cap: maybe reset before Dial returns
			defer c.Close()
			idle = append(idle, c)
		}
	}
	waitFor(t, func() bool { return ln.active() == 4 && ln.refused.Load() == 6 })
	if probe, err := net.Dial("tcp", mon); err == nil {
		if _, err := keepAliveProbe(probe, "/health/live"); err == nil {
			t.Fatal("a probe over the cap was served")
		}
		probe.Close()
	}
	if ln.refused.Load() != 7 {
		t.Fatalf("probe over the cap: %d refused, want 7", ln.refused.Load())
	}
	for _, c := range idle {
		c.Close()
	}
	waitFor(t, func() bool { return ln.active() == 0 })
	if code, body := get(t, "http://"+mon+"/health/live"); code != 200 || body != "ok\n" {
		t.Fatalf("after the idle clients left: %d %q", code, body)
	}

	// Now let the server time idle clients out by itself.
	pm2 := NewProtocolManager(WithLogger(discardLogger()))
	defer pm2.Close()
	lim.readHeaderTimeout = 100 * time.Millisecond
	mon2, err := pm2.serveHealthWith("127.0.0.1:0", lim)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		c, err := net.Dial("tcp", mon2)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("silent client %d not timed out by the server: %v", i, err)
		}
	}
	waitFor(t, func() bool { return monitorOf(pm2, true).active() == 0 })
	if code, _ := get(t, "http://"+mon2+"/health/live"); code != 200 {
		t.Fatalf("fresh probe: %d", code)
	}
}

// TestMonitoringPortsCloseIdleKeepAlive: a keep-alive connection left idle
// after a request is closed by the server after the idle timeout.
func TestMonitoringPortsCloseIdleKeepAlive(t *testing.T) {
	lim := defaultMonitorLimits
	lim.idleTimeout = 100 * time.Millisecond
	for _, health := range []bool{true, false} {
		pm := NewProtocolManager(WithLogger(discardLogger()))
		defer pm.Close()
		var addr, path string
		var err error
		if health {
			addr, err = pm.serveHealthWith("127.0.0.1:0", lim)
			path = "/health/live"
		} else {
			addr, err = pm.serveMetricsWith("127.0.0.1:0", lim)
			path = "/metrics"
		}
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if resp, err := keepAliveProbe(c, path); err != nil || resp.StatusCode != 200 || resp.Close {
			t.Fatalf("%s: %v %v", path, resp, err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("%s: idle keep-alive connection not closed by the server: %d %v", path, n, err)
		}
		waitFor(t, func() bool { return monitorOf(pm, health).active() == 0 })
	}
}

// TestMonitoringDefaults: the limits ServeMetrics and ServeHealth document,
// and EnablePrometheusMetrics on loopback only.
func TestMonitoringDefaults(t *testing.T) {
	pm := NewProtocolManager(WithLogger(discardLogger()))
	defer pm.Close()
	if err := pm.EnablePrometheusMetrics(0); err != nil {
		t.Fatal(err)
	}
	if addr := pm.MetricsAddr(); !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("EnablePrometheusMetrics bound %s", addr)
	}
	if _, err := pm.ServeHealth("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if _, err := pm.ServeHealth("127.0.0.1:0"); err == nil {
		t.Fatal("a second health server started")
	}
	pm.mu.Lock()
	defer pm.mu.Unlock()
	for _, m := range []*promExporter{pm.prom, pm.health} {
		s := m.srv
		if s.ReadHeaderTimeout != 3*time.Second || s.ReadTimeout != 5*time.Second || s.WriteTimeout != 10*time.Second ||
			s.IdleTimeout != 30*time.Second || s.MaxHeaderBytes != 8<<10 || m.ln.maxConns != 64 || m.ln.maxPerSource != 8 {
			t.Fatalf("limits %v %v %v %v %v %d %d", s.ReadHeaderTimeout, s.ReadTimeout, s.WriteTimeout, s.IdleTimeout, s.MaxHeaderBytes,
				m.ln.maxConns, m.ln.maxPerSource)
		}
	}
}

// dialFrom connects to addr from 127.0.0.host, a source of its own.
func dialFrom(host byte, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, host)}, Timeout: 10 * time.Second}
	return d.Dial("tcp", addr)
}

// probeFrom sends one request from 127.0.0.host on a fresh connection and
// returns the status, or an error when the connection was turned away.
func probeFrom(host byte, addr, path string) (int, error) {
	c, err := dialFrom(host, addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	resp, err := keepAliveProbe(c, path)
	if err != nil {
		return 0, err
	}
	return resp.StatusCode, nil
}

// startHealth serves the health port of a new manager within lim.
func startHealth(t *testing.T, lim monitorLimits) (string, *monitorListener) {
	t.Helper()
	pm := NewProtocolManager(WithLogger(discardLogger()))
	t.Cleanup(func() { pm.Close() })
	addr, err := pm.serveHealthWith("127.0.0.1:0", lim)
	if err != nil {
		t.Fatal(err)
	}
	return addr, monitorOf(pm, true)
}

// TestMonitorPerSourceShare: one source opening more connections than the
// port's cap, none of them ever sending a request, holds only its share;
// the rest are refused at once, and a probe from another source is answered.
func TestMonitorPerSourceShare(t *testing.T) {
	lim := defaultMonitorLimits
	lim.maxConns, lim.maxConnsPerSource = 16, 4
	lim.readHeaderTimeout = time.Hour // held until the test closes them
	addr, ln := startHealth(t, lim)
	const opened = 20
	for range opened {
		if c, err := dialFrom(1, addr); err == nil { // refused ones may be reset before Dial returns
			defer c.Close()
		}
	}
	waitFor(t, func() bool { return ln.active()+int(ln.refused.Load()) == opened })
	if held := ln.active(); held != lim.maxConnsPerSource {
		t.Fatalf("one source holds %d connections, want its share of %d", held, lim.maxConnsPerSource)
	}
	if code, err := probeFrom(2, addr, "/health/live"); err != nil || code != 200 {
		t.Fatalf("probe from another source: %d %v", code, err)
	}
	if code, err := probeFrom(1, addr, "/health/live"); err == nil {
		t.Fatalf("a probe over the source's share was served: %d", code)
	}
}

// TestMonitorEvictsIdleKeepAlive: with the port full of keep-alive
// connections from many sources, each idle after one request, a new probe
// is answered: the connection idle the longest is closed to make room.
func TestMonitorEvictsIdleKeepAlive(t *testing.T) {
	lim := defaultMonitorLimits
	lim.maxConns = 8
	lim.idleTimeout = time.Hour // only eviction frees a slot
	addr, ln := startHealth(t, lim)
	var held []net.Conn
	for i := range lim.maxConns {
		c, err := dialFrom(byte(10+i), addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if resp, err := keepAliveProbe(c, "/health/live"); err != nil || resp.StatusCode != 200 {
			t.Fatalf("keep-alive client %d: %v %v", i, resp, err)
		}
		held = append(held, c)
		// Each idle after the one before, so held[0] is idle the longest.
		waitFor(t, func() bool { return ln.idle() == i+1 })
	}
	if code, err := probeFrom(100, addr, "/health/live"); err != nil || code != 200 {
		t.Fatalf("probe with the port full of idle keep-alives: %d %v", code, err)
	}
	if n := ln.evicted.Load(); n != 1 {
		t.Fatalf("%d connections evicted, want 1", n)
	}
	held[0].SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := held[0].Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the longest idle connection was not closed: %d %v", n, err)
	}
	if resp, err := keepAliveProbe(held[1], "/health/live"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("a more recent keep-alive connection: %v %v", resp, err)
	}
}

// TestMonitorRefusesWhenAllBusy: with every held connection in the middle
// of a request whose header never ends (a new connection, or a keep-alive
// one that has started its next request), a new probe is refused at once,
// and answered once the server has timed the held ones out.
func TestMonitorRefusesWhenAllBusy(t *testing.T) {
	const partial = "GET /health/live HTTP/1.1\r\nHost: x\r\n"
	for _, timeout := range []time.Duration{time.Hour, 200 * time.Millisecond} {
		lim := defaultMonitorLimits
		lim.maxConns = 4
		lim.readHeaderTimeout = timeout
		lim.idleTimeout = time.Hour
		addr, ln := startHealth(t, lim)
		var held []net.Conn
		for i := range lim.maxConns {
			c, err := dialFrom(byte(10+i), addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			keepAlive := i%2 == 1 // one request done, the next begun
			if keepAlive {
				if resp, err := keepAliveProbe(c, "/health/live"); err != nil || resp.StatusCode != 200 {
					t.Fatalf("keep-alive client %d: %v %v", i, resp, err)
				}
				waitFor(t, func() bool { return ln.idle() == 1 })
			}
			if _, err := io.WriteString(c, partial); err != nil {
				t.Fatal(err)
			}
			if keepAlive {
				waitFor(t, func() bool { return ln.idle() == 0 }) // its next request has begun
			}
			held = append(held, c)
		}
		waitFor(t, func() bool { return ln.active() == lim.maxConns })
		if timeout == time.Hour {
			if code, err := probeFrom(100, addr, "/health/live"); err == nil {
				t.Fatalf("a probe was served by evicting a connection mid-request: %d", code)
			}
			if n := ln.evicted.Load(); n != 0 {
				t.Fatalf("%d connections mid-request evicted", n)
			}
			continue
		}
		for i, c := range held {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.Copy(io.Discard, c); err != nil {
				t.Fatalf("held connection %d not timed out by the server: %v", i, err)
			}
		}
		waitFor(t, func() bool { return ln.active() == 0 })
		if code, err := probeFrom(100, addr, "/health/live"); err != nil || code != 200 {
			t.Fatalf("probe after the held connections timed out: %d %v", code, err)
		}
	}
}

// TestMonitorEvictsFromLargestSource: with the port full of connections
// that never send a request, all from one source allowed the whole port, a
// probe from another source is answered: a connection of the source
// holding far more than its fair part is closed to make room.
func TestMonitorEvictsFromLargestSource(t *testing.T) {
	lim := defaultMonitorLimits
	lim.maxConns, lim.maxConnsPerSource = 6, 6
	lim.readHeaderTimeout = time.Hour
	addr, ln := startHealth(t, lim)
	var held []net.Conn
	for range lim.maxConns {
		c, err := dialFrom(1, addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	waitFor(t, func() bool { return ln.active() == lim.maxConns })
	if code, err := probeFrom(2, addr, "/health/live"); err != nil || code != 200 {
		t.Fatalf("probe from a second source: %d %v", code, err)
	}
	if n := ln.evicted.Load(); n != 1 {
		t.Fatalf("%d connections evicted, want 1", n)
	}
}
