package main

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/darkit/protoplex/internal/testnet"
)

// TestBannerNamesRoutes: the start-up banner names each route as the
// access log and the metrics do, so two TLS routes are told apart by their
// SNI, and a UDP listener is printed as one, not as a second "listening:"
// line that looks like the stream port.
func TestBannerNamesRoutes(t *testing.T) {
	addr := testnet.FreeAddr(t)
	cfg := filepath.Join(t.TempDir(), "banner.yaml")
	testnet.WriteFile(t, cfg, fmt.Sprintf(`server:
  listen: %q
  listen_udp: %q
protocols:
  - name: TLS
    sni: [a.example]
    target: "127.0.0.1:8443"
  - name: TLS
    sni: [b.example, "*.c.example"]
    alpn: [h2]
    target: "127.0.0.1:9443"
  - name: DNS
    target: "127.0.0.1:53"
monitoring:
  metrics_port: 0
  health_check_port: 0
`, addr, addr))
	p := start(t, "-config", cfg)
	p.waitLine(t, `^route: +DNS `)
	out := p.stdout.String()
	for _, want := range []string{
		"listening: " + addr + "\n",
		"listening (udp): " + addr + "\n",
		"route:    TLS[sni=a.example] -> 127.0.0.1:8443\n",
		"route:    TLS[sni=b.example,*.c.example;alpn=h2] -> 127.0.0.1:9443\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("banner has no line %q:\n%s", want, out)
		}
	}
	if n := len(regexp.MustCompile(`(?m)^listening: `).FindAllString(out, -1)); n != 1 {
		t.Errorf("%d \"listening: \" lines, want the stream port's only:\n%s", n, out)
	}
}
