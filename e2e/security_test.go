package e2e

import (
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/darkit/protoplex"
	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/protocols"
)

// startConfigured runs a manager built from YAML on an ephemeral port.
func startConfigured(t testing.TB, yaml string) (string, *protoplex.ProtocolManager) {
	t.Helper()
	return startConfiguredOn(t, testnet.Listen(t), yaml)
}

// startConfiguredOn runs a manager built from YAML on ln.
func startConfiguredOn(t testing.TB, ln net.Listener, yaml string) (string, *protoplex.ProtocolManager) {
	t.Helper()
	cfg, err := protoplex.ParseConfig([]byte(yaml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pm := protoplex.NewProtocolManager(protoplex.WithLogger(slog.New(slog.DiscardHandler)), testDataPlane())
	if err := pm.UpdateConfig(cfg); err != nil {
		t.Fatal(err)
	}
	return serveOn(t, ln, pm), pm
}

// dialFrom connects from a given loopback source address (127.0.0.x).
func dialFrom(src, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	return d.Dial("tcp", addr)
}

// exchange sends an SSH banner and returns the reply line ("" if closed).
func exchange(src, addr string) string {
	c, err := dialFrom(src, addr)
	if err != nil {
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "SSH-2.0-client\r\n")
	buf := make([]byte, 64)
	n, _ := io.ReadAtLeast(c, buf, 1)
	return string(buf[:n])
}

// TestFloodFromOneSourceLeavesOthersServed: 127.0.0.2 floods and is rate
// limited; a well-behaved client on 127.0.0.3 keeps working during the
// flood, checked with a real curl through the same port.
func TestFloodFromOneSourceLeavesOthersServed(t *testing.T) {
	web := startNginx(t, "still served", "")
	addr, pm := startConfigured(t, fmt.Sprintf(`
security:
  enable_rate_limit: true
  rate_limit: {requests_per_second: 20, burst_size: 20}
protocols:
  - name: SSH
    target: %q
  - name: HTTP
    target: %q
`, testnet.Echo(t), web))
	var ok, refused atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if strings.HasPrefix(exchange("127.0.0.2", addr), "SSH-2.0-client") {
					ok.Add(1)
				} else {
					refused.Add(1)
				}
			}
		}()
	}
	curl := requireBinary(t, "curl")
	for i := 0; i < 5; i++ {
		out, err := run(t, 20*time.Second, curl, "-sS", "--interface", "127.0.0.3", "http://"+addr+"/")
		if err != nil || out != "still served" {
			t.Fatalf("well-behaved client during the flood: %v %q", err, out)
		}
	}
	close(stop)
	wg.Wait()
	m := pm.GetMetrics().Security
	if refused.Load() == 0 || m.RateLimitedRequests == 0 || ok.Load() > 20+int64(2*time.Minute.Seconds()*20) {
		t.Fatalf("flood not limited: ok=%d refused=%d metrics=%+v", ok.Load(), refused.Load(), m)
	}
	t.Logf("flood: %d served, %d refused; %+v", ok.Load(), refused.Load(), m)
}

func TestAllowDenyLists(t *testing.T) {
	addr, _ := startConfigured(t, fmt.Sprintf(`
security:
  ip_blacklist: ["127.0.0.4", "127.0.1.0/24", "::1"]
  ip_whitelist: ["127.0.0.5"]
  enable_rate_limit: true
  rate_limit: {requests_per_second: 0.001, burst_size: 1}
protocols:
  - name: SSH
    target: %q
`, testnet.Echo(t)))
	if got := exchange("127.0.0.4", addr); got != "" {
		t.Fatalf("exact deny served: %q", got)
	}
	if got := exchange("127.0.1.77", addr); got != "" {
		t.Fatalf("CIDR deny served: %q", got)
	}
	for i := 0; i < 3; i++ { // whitelisted: no rate limit
		if got := exchange("127.0.0.5", addr); !strings.HasPrefix(got, "SSH-2.0") {
			t.Fatalf("whitelisted refused: %q", got)
		}
	}
	if got := exchange("127.0.0.6", addr); !strings.HasPrefix(got, "SSH-2.0") {
		t.Fatalf("first connection refused: %q", got)
	}
	if got := exchange("127.0.0.6", addr); got != "" {
		t.Fatalf("second connection within the rate served: %q", got)
	}
	// IPv6 source: a listener on [::1] with ::1 denied.
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback")
	}
	t.Cleanup(func() { ln.Close() })
	v6, pm := startConfiguredOn(t, ln, "security:\n  ip_blacklist: [\"::1/128\"]\nprotocols:\n  - name: SSH\n    target: \"127.0.0.1:1\"\n")
	c, err := net.Dial("tcp", v6)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF && !isConnReset(err) {
		t.Fatalf("IPv6 denied source not closed: %v", err)
	}
	c.Close()
	if pm.GetMetrics().Security.BlacklistedDenied != 1 {
		t.Fatalf("%+v", pm.GetMetrics().Security)
	}
}

func isConnReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "reset") || strings.Contains(err.Error(), "closed"))
}

func openFDs() int {
	ents, _ := os.ReadDir("/proc/self/fd")
	return len(ents)
}

// TestHostileClients: slowloris, garbage, half-open, RST mid-identification,
// close after one byte. All are closed with a counted reason, nothing leaks
// (goroutines: goleak in TestMain; fds: /proc/self/fd), good clients still
// get their bytes.
func TestHostileClients(t *testing.T) {
	backend := testnet.Echo(t)
	addr, pm := startMuxWith(t, []protoplex.Option{protoplex.WithIdentifyTimeout(2 * time.Second), protoplex.WithMaxConnections(5000)},
		protocols.NewSSHProtocol(backend), protocols.NewHTTPProtocol(backend))
	// One served connection first: the baseline then holds what serving
	// itself keeps open (the event loops' epoll and wake fds).
	if _, err := testnet.RoundTrip(addr, "SSH-2.0-warm\r\n"); err != nil {
		t.Fatal(err)
	}
	fdsBefore := openFDs()

	// Slowloris: 1,000 connections sending "GET" one byte every 300 ms — a
	// request line that never completes within IdentifyTimeout.
	slow := 1000
	if testing.Short() {
		slow = 200
	}
	var wg sync.WaitGroup
	var closedAtDeadline atomic.Int64
	start := time.Now()
	for i := 0; i < slow; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return
			}
			defer c.Close()
			for _, b := range []byte("GET /aaaaaaaaaaaaaaaaaaaa") {
				if _, err := c.Write([]byte{b}); err != nil {
					break
				}
				time.Sleep(300 * time.Millisecond) // the attacker's pace, not synchronisation
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err != nil && time.Since(start) < 8*time.Second {
				closedAtDeadline.Add(1)
			}
		}()
	}
	// Garbage, half-open, reset, one byte — 200 of each kind.
	for i := 0; i < 200; i++ {
		junk := make([]byte, 64)
		rand.Read(junk)
		junk[0] = 0xFF // never a valid first byte here
		for kind := 0; kind < 4; kind++ {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			switch kind {
			case 0:
				c.Write(junk)
			case 1:
				c.Write([]byte("SSH-2"))
				c.(*net.TCPConn).CloseWrite()
			case 2:
				c.Write([]byte("GE"))
				c.(*net.TCPConn).SetLinger(0) // RST on close
			case 3:
				c.Write([]byte("S"))
			}
			c.Close()
		}
	}
	// A good client in the middle of it all gets its bytes intact.
	payload := make([]byte, 1<<20)
	rand.Read(payload)
	copy(payload, "SSH-2.0-good\r\n")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() { c.Write(payload); c.(*net.TCPConn).CloseWrite() }()
	got, _ := io.ReadAll(c)
	c.Close()
	if string(got) != string(payload) {
		t.Fatalf("good client got %d bytes, want %d intact", len(got), len(payload))
	}
	wg.Wait()
	if closedAtDeadline.Load() < int64(slow)*9/10 {
		t.Fatalf("only %d of %d slowloris connections closed at the identify deadline", closedAtDeadline.Load(), slow)
	}
	// Everything is released: no connection left, fds back to the baseline.
	testnet.Eventually(t, 10*time.Second, func() bool {
		// Idle splice pipes sit in a sync.Pool until the GC releases them.
		runtime.GC()
		return pm.GetMetrics().ActiveConnections == 0 && openFDs() <= fdsBefore+2
	}, "connections or fds left: %s", testnet.Later(func() string {
		return fmt.Sprintf("active=%d fds=%d (before %d)", pm.GetMetrics().ActiveConnections, openFDs(), fdsBefore)
	}))
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("slowloris %d closed at deadline; heap in use after: %d KiB", closedAtDeadline.Load(), ms.HeapInuse>>10)
}
