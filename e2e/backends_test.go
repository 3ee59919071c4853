package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// redisName asks, through addr, which backend answers (each redis-server
// holds its own name under the key "name").
func redisName(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "*2\r\n$3\r\nGET\r\n$4\r\nname\r\n")
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil { // $1
		return "", err
	}
	v, err := r.ReadString('\n')
	return strings.TrimSpace(v), err
}

func setName(t *testing.T, addr, name string) {
	t.Helper()
	out, err := run(t, 10*time.Second, requireBinary(t, "redis-cli"), "-h", "127.0.0.1", "-p", port(addr), "set", "name", name)
	if err != nil || strings.TrimSpace(out) != "OK" {
		t.Fatalf("%v %q", err, out)
	}
}

// TestWeightedRedisBackends: three real redis-server behind one route,
// weights 1:2:3 (smooth weighted round-robin) with redis PING health checks.
// 3,000 connections split by weight; one backend killed mid-run costs no
// client an error; it is re-admitted when it is back.
func TestWeightedRedisBackends(t *testing.T) {
	a, b := startRedis(t), startRedis(t)
	cPort := testnet.FreePort(t)
	c, stopC := startRedisOn(t, cPort)
	setName(t, a, "A")
	setName(t, b, "B")
	setName(t, c, "C")
	// C runs in a process we can stop and restart on the same port.
	addr, pm := startConfigured(t, fmt.Sprintf(`
protocols:
  - name: Redis
    target: ["%s;w=1", "%s;w=2", "%s;w=3"]
    balance: weighted_round_robin
    health_check: {interval: "100ms", timeout: "2s", check: redis, rise: 1, fall: 2}
`, a, b, c))
	counts := map[string]int{}
	for i := 0; i < 3000; i++ {
		n, err := redisName(addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		counts[n]++
	}
	for name, want := range map[string]float64{"A": 500, "B": 1000, "C": 1500} {
		if got := float64(counts[name]); got < want*0.9 || got > want*1.1 {
			t.Fatalf("distribution %v, want 500/1000/1500 ±10%%", counts)
		}
	}
	t.Logf("distribution over 3000 connections: %v", counts)

	// Kill C mid-run: clients keep being served (by A and B), none fails.
	stopC()
	for i := 0; i < 300; i++ {
		n, err := redisName(addr)
		if err != nil || (n != "A" && n != "B") {
			t.Fatalf("after killing C, connection %d: %q %v", i, n, err)
		}
	}
	// Restart C on its port: the health check re-admits it.
	startRedisOn(t, cPort)
	setName(t, c, "C")
	testnet.Eventually(t, 15*time.Second, func() bool {
		n, err := redisName(addr)
		if err != nil {
			t.Fatal(err)
		}
		return n == "C"
	}, "restarted backend never re-admitted")
	if pm.GetMetrics().ConnectionPool.HealthChecks == 0 {
		t.Fatal("no health checks counted")
	}
}
