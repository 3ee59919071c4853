package protoplex

import (
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/monitor"
	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/protocols"
)

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
			pm.AddProtocol(protocols.NewSSHProtocol(testnet.Banner(t, "ssh:")))
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
					if resp, err := testnet.KeepAliveGet(c, port.path); err == nil && resp.StatusCode == 200 {
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
			limit := monitor.DefaultLimits().MaxConns
			if held := ln.Active(); held > limit {
				t.Fatalf("the %s port holds %d connections, cap %d", port.name, held, limit)
			}
			if evicted := int(ln.Evicted()); served > limit+evicted || served == 0 {
				t.Fatalf("%d of %d idle keep-alive clients served with %d evicted, want 1..%d", served, clients, evicted, limit+evicted)
			}
			if held := openFDs(t) - fdsBefore - len(conns); held > limit+8 {
				t.Fatalf("the %s port holds %d sockets for %d idle clients", port.name, held, clients)
			}
			if got := roundTrip(t, data, "SSH-2.0-x\r\n"); got != "ssh:SSH-2.0-x\r\n" {
				t.Fatalf("data port: %q", got)
			}
		})
	}
}

// monitorOf returns the running health or metrics server.
func monitorOf(pm *ProtocolManager, health bool) *monitor.Server {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	if health {
		return pm.monitors[healthPort]
	}
	return pm.monitors[metricsPort]
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
	for _, health := range []bool{false, true} {
		if got := monitorOf(pm, health).Limits(); got != monitor.DefaultLimits() {
			t.Fatalf("limits %+v, want the defaults %+v", got, monitor.DefaultLimits())
		}
	}
}

// dialFrom connects to addr from 127.0.0.host, a source of its own.
func dialFrom(host byte, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, host)}, Timeout: 10 * time.Second}
	return d.Dial("tcp", addr)
}
