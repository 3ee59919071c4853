package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
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
	body := scrape()
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
