package e2e

import (
	"cmp"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/internal/udp/udptest"
)

// TestUDPFloodBoundedThroughBinary: the binary, max_udp_flows 50, gets a
// matching datagram from each of 400 source ports (a spoofed-source flood
// as the kernel delivers it) and never answers: the table holds 50 flows,
// the other 350 are evicted and counted, and the process holds no more
// than about 50 upstream sockets. Without max_udp_flows_per_source (the
// default) nothing is refused for coming from one address.
func TestUDPFloodBoundedThroughBinary(t *testing.T) {
	bin := buildCLI(t)
	echo := udptest.Echo(t, false)
	_, udpAddr := loopbackPort(t)
	mport, _ := loopbackPort(t)
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	testnet.WriteFile(t, cfg, fmt.Sprintf(`server:
  listen: "127.0.0.1:0"
  listen_udp: %q
  max_udp_flows: 50
  log_level: warn
protocols:
  - name: mine
    transport: udp
    match_start_bytes: ["6964"]
    target: %q
monitoring:
  enable_metrics: true
  metrics_port: %d
  health_check_port: 0
`, udpAddr, echo, mport))
	_, p, _ := startCLI(t, bin, "-config", cfg)
	metric := func(body, name string) float64 {
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(body)
		if m == nil {
			return -1
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		return v
	}
	scrape := func() string {
		r, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", mport))
		if err != nil {
			return ""
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return string(b)
	}
	fds := func() int {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.Cmd.Process.Pid))
		if err != nil {
			return -1
		}
		return len(ents)
	}
	before := -1
	testnet.Eventually(t, 10*time.Second, func() bool { return scrape() != "" }, "no metrics on port %d", mport)
	before = fds()

	const sources = 400
	to, _ := net.ResolveUDPAddr("udp", udpAddr)
	var sent, dropped float64
	testnet.Eventually(t, 30*time.Second, func() bool {
		// Datagrams may be dropped by a full socket buffer: resend from
		// fresh ports until 400 flows were created.
		for range sources {
			c, err := net.DialUDP("udp", nil, to)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = c.Write([]byte("id-flood"))
			c.Close()
			sent++
		}
		body := scrape()
		dropped = metric(body, `protoplex_udp_flows_expired_total{reason="evicted"}`)
		return metric(body, `protoplex_udp_flows_total{protocol="mine"}`) >= sources
	}, "fewer than %d flows created (sent %v)", sources, sent)
	// Datagrams still queued in the socket's buffer may open flows while a
	// scrape reads one counter and then the next: read a settled state.
	var body string
	testnet.Eventually(t, 10*time.Second, func() bool {
		b1 := scrape()
		body = scrape()
		for _, m := range []string{`protoplex_udp_flows_total{protocol="mine"}`, `protoplex_udp_flows_expired_total{reason="evicted"}`} {
			if metric(b1, m) != metric(body, m) {
				return false
			}
		}
		return true
	}, "the flow counters do not settle")
	if a := metric(body, "protoplex_udp_flows_active"); a != 50 {
		t.Errorf("flows active = %v, want 50 (max_udp_flows)\n%s", a, p.Out)
	}
	created := metric(body, `protoplex_udp_flows_total{protocol="mine"}`)
	if dropped = metric(body, `protoplex_udp_flows_expired_total{reason="evicted"}`); dropped != created-50 {
		t.Errorf("evicted = %v, want every flow but 50 of %v", dropped, created)
	}
	if r := metric(body, `protoplex_udp_refused_total{reason="per_source_limit"}`); r != 0 {
		t.Errorf("refused per_source_limit = %v without max_udp_flows_per_source, want 0", r)
	}
	if now := fds(); before >= 0 && now-before > 50+8 {
		t.Errorf("the process holds %d more fds after the flood, want at most 58", now-before)
	}
	// Logged, rate-limited: far fewer lines than evictions.
	if n := regexp.MustCompile(`udp flow evicted`).FindAllStringIndex(p.Out.String(), -1); len(n) == 0 || float64(len(n)) >= dropped {
		t.Errorf("%d eviction lines for %v evictions, want some, rate-limited", len(n), dropped)
	}
}

// dnsQuery is a DNS query for name A IN with id.
func dnsQuery(id uint16, name string) []byte {
	q := []byte{byte(id >> 8), byte(id), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, l := range strings.Split(name, ".") {
		q = append(append(q, byte(len(l))), l...)
	}
	return append(q, 0, 0, 1, 0, 1)
}

// TestUDPResolverPattern: queries from a new source port each, as a
// recursive resolver sends them (RFC 5452), 32 at once through protoplex to
// dnsmasq: every query is answered, and each flow ends with its answer
// (DNS's udp_responses is 1), so the table and the sockets held go back to
// none instead of one per query for the idle timeout.
func TestUDPResolverPattern(t *testing.T) {
	dns := startDnsmasq(t)
	addr, pm := startUDPMux(t, fmt.Sprintf("protocols:\n  - name: dns\n    target: %q\n", dns))
	to, _ := net.ResolveUDPAddr("udp", addr)
	const workers, each = 32, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 512)
			for i := range each {
				id := uint16(w*each + i)
				c, err := net.DialUDP("udp", nil, to)
				if err != nil {
					errs <- err
					return
				}
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_, err = c.Write(dnsQuery(id, "example.test"))
				n := 0
				if err == nil {
					n, err = c.Read(buf)
				}
				c.Close()
				switch {
				case err != nil:
					errs <- fmt.Errorf("query %d: %v", id, err)
				case n < 12 || uint16(buf[0])<<8|uint16(buf[1]) != id || buf[3]&0x0f != 0 || buf[7] == 0:
					errs <- fmt.Errorf("query %d: answer %x", id, buf[:n])
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	scrape := func() string {
		rec := httptest.NewRecorder()
		pm.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		return rec.Body.String()
	}
	testnet.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(scrape(), "\nprotoplex_udp_flows_active 0\n")
	}, "flows still held after every answer:\n%s", scrape())
	if want := fmt.Sprintf("\nprotoplex_udp_flows_expired_total{reason=\"answered\"} %d\n", workers*each); !strings.Contains(scrape(), want) {
		t.Errorf("want %q in:\n%s", want, scrape())
	}
	// dnsmasq's every answer passes the query guard of reused sockets.
	for _, why := range []string{"stale_reply", "idle_socket", "unchecked_query"} {
		if want := fmt.Sprintf("\nprotoplex_udp_dropped_total{reason=%q} 0\n", why); !strings.Contains(scrape(), want) {
			t.Errorf("want %q in:\n%s", want, scrape())
		}
	}
	// On the event loops the answered flows leave their sockets to the next.
	if runtime.GOOS == "linux" && cmp.Or(os.Getenv("PROTOPLEX_TEST_DATA_PLANE"), "events") == "events" &&
		strings.Contains(scrape(), "\nprotoplex_udp_pooled_sockets 0\n") {
		t.Errorf("no upstream socket pooled after %d answered queries:\n%s", workers*each, scrape())
	}
}

// TestUDPHealthDNS: the active health check of a DNS entry on UDP is a
// query and an answer: it finds dnsmasq up and a port that accepts TCP but
// answers no query down, and the flows go to dnsmasq only.
func TestUDPHealthDNS(t *testing.T) {
	dns := startDnsmasq(t)
	// It accepts TCP on the same port: a TCP connect probe would find it up.
	var silent *net.UDPConn
	for try := 0; silent == nil; try++ {
		tcp, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tcp.Close() })
		if silent, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(tcp.Addr().(*net.TCPAddr).AddrPort())); err != nil && try == 10 {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { silent.Close() })
	addr, pm := startUDPMux(t, fmt.Sprintf("protocols:\n  - name: DNS\n    transport: udp\n    target: \"%s,%s\"\n    health_check:\n      interval: 100ms\n      timeout: 200ms\n      fall: 1\n      rise: 1\n",
		silent.LocalAddr(), dns))
	scrape := func() string {
		rec := httptest.NewRecorder()
		pm.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		return rec.Body.String()
	}
	up := fmt.Sprintf("protoplex_backend_up{protocol=\"DNS\",route=\"DNS\",target=%q} 1", dns)
	down := fmt.Sprintf("protoplex_backend_up{protocol=\"DNS\",route=\"DNS\",target=%q} 0", silent.LocalAddr().String())
	testnet.Eventually(t, 10*time.Second, func() bool { s := scrape(); return strings.Contains(s, up) && strings.Contains(s, down) },
		"want %q and %q in:\n%s", up, down, testnet.Later(scrape))
	to, _ := net.ResolveUDPAddr("udp", addr)
	buf := make([]byte, 512)
	for i := range 20 {
		c, err := net.DialUDP("udp", nil, to)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write(dnsQuery(uint16(i), "example.test"))
		if n, err := c.Read(buf); err != nil || n < 12 || buf[7] == 0 {
			t.Fatalf("query %d: %v", i, err)
		}
		c.Close()
	}
}
