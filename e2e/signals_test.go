package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// TestDNSPaddedQueryThroughCLI: dig +tcp queries padded (RFC 7830, 8467)
// beyond the 511 bytes DNS detection once stopped at: +padding=512 (dig's
// largest block: a 514-byte flight) and a padding option of 602 bytes
// (+ednsopt=12, no cookie: a 649-byte flight). The binary routes each to
// dnsmasq and dig gets its answer.
func TestDNSPaddedQueryThroughCLI(t *testing.T) {
	dig := requireBinary(t, "dig")
	dns := startDnsmasq(t)
	bin := buildCLI(t)
	cfg := filepath.Join(t.TempDir(), "dns.yaml")
	testnet.WriteFile(t, cfg, fmt.Sprintf(`server:
  listen: "127.0.0.1:0"
protocols:
  - name: SSH
    target: "127.0.0.1:1"
  - name: DNS
    target: %q
monitoring:
  metrics_port: 0
  health_check_port: 0
`, dns))
	addr, p, _ := startCLI(t, bin, "-config", cfg)
	host, port := addr[:strings.LastIndexByte(addr, ':')], port(addr)
	for _, pad := range []string{"+padding=0", "+padding=512", "+ednsopt=12:" + strings.Repeat("00", 602)} {
		out, err := run(t, 20*time.Second, dig, "+tcp", "+nocookie", pad, "+tries=1", "+time=5", "+short", "@"+host, "-p", port, "example.test", "A")
		if err != nil || strings.TrimSpace(out) != "192.0.2.7" {
			t.Fatalf("dig %.20s: %v %q; stderr:\n%s", pad, err, out, p.Out)
		}
	}
}
