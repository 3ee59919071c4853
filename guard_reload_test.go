package protoplex

import (
	"fmt"
	"github.com/darkit/protoplex/internal/testnet"
	"io"
	"net"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/guard"
)

// TestGuardAccountingSurvivesReloads replays issue 12 §3 on real sockets:
// hold 3 connections at max_connections_per_ip 3, reload without security:,
// close them, reload the cap back. The source must be served again.
func TestGuardAccountingSurvivesReloads(t *testing.T) {
	arrived := make(chan struct{}, 16)
	backend := testnet.Serve(t, func(c net.Conn) { arrived <- struct{}{}; io.Copy(io.Discard, c) })
	conf := func(security string) *Config {
		t.Helper()
		cfg, err := ParseConfig([]byte(fmt.Sprintf("protocols:\n  - name: SSH\n    target: %q\n%s", backend, security)), "test.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	capped, open := conf("security:\n  max_connections_per_ip: 3\n"), conf("")
	pm := NewProtocolManager(WithLogger(discardLogger()))
	if err := pm.UpdateConfig(capped); err != nil {
		t.Fatal(err)
	}
	addr := serveTest(t, pm)

	refusedPerIP := func() float64 {
		return scrape(t, pm)["protoplex_connections_refused_total{reason="+guard.PerIPLimit.String()+"}"]
	}
	holdThree := func() []net.Conn {
		t.Helper()
		var held []net.Conn
		for i := 0; i < 3; i++ {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(c, "SSH-2.0-held\r\n"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			held = append(held, c)
		}
		for i := range held {
			select {
			case <-arrived:
			case <-time.After(10 * time.Second):
				t.Fatalf("connection %d of 3 never reached the backend (refused: %v per_ip_limit)", i, refusedPerIP())
			}
		}
		return held
	}
	closeAll := func(cs []net.Conn) {
		for _, c := range cs {
			c.Close()
		}
		waitFor(t, func() bool { return pm.GetMetrics().ActiveConnections == 0 })
	}
	// servedOnce reports whether one more connection reaches the backend
	// (true) or is refused for the per-IP cap (false).
	servedOnce := func() bool {
		t.Helper()
		before := refusedPerIP()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "SSH-2.0-probe\r\n")
		served := false
		waitFor(t, func() bool {
			select {
			case <-arrived:
				served = true
			default:
			}
			return served || refusedPerIP() > before
		})
		return served
	}

	held := holdThree()
	if servedOnce() {
		t.Fatal("a 4th connection passed max_connections_per_ip: 3")
	}
	if err := pm.UpdateConfig(open); err != nil {
		t.Fatal(err)
	}
	closeAll(held)
	if err := pm.UpdateConfig(capped); err != nil {
		t.Fatal(err)
	}
	held = holdThree() // refused forever before the fix
	if servedOnce() {
		t.Fatal("the cap no longer applies after the reloads")
	}
	closeAll(held)
}
