//go:build unix

package main

// Operator-visible signals through the binary: the banner, the open line
// of the access log, what a reload says it changed, the file watcher's
// switch and its coalescing of one edit with a SIGHUP.

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

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

// TestAccessLogOpenLine: with access_log_open a connection is logged when
// it opens, while it is still open, on both data planes; the closing line
// follows when it ends.
func TestAccessLogOpenLine(t *testing.T) {
	for _, plane := range []string{"events", "goroutines"} {
		t.Run(plane, func(t *testing.T) {
			be := testnet.Banner(t, "A:")
			cfg := filepath.Join(t.TempDir(), "open.yaml")
			testnet.WriteFile(t, cfg, fmt.Sprintf(`server:
  listen: "127.0.0.1:0"
  data_plane: %s
  access_log: true
  access_log_open: true
protocols:
  - name: SSH
    target: %q
monitoring:
  metrics_port: 0
  health_check_port: 0
`, plane, be))
			p := start(t, "-config", cfg)
			addr := p.waitLine(t, `^listening: (\S+)`)[1]
			c, _ := openStream(t, addr, "A:")
			open := regexp.MustCompile(`level=INFO msg="connection opened" client=127\.0\.0\.1:\d+ protocol=SSH route=SSH target=` + regexp.QuoteMeta(be) + "\n")
			testnet.Eventually(t, 10*time.Second, func() bool { return open.MatchString(p.Out.String()) },
				"no open line while the connection is open; stderr:\n%s", p.Out)
			if strings.Contains(p.Out.String(), `msg="connection closed"`) {
				t.Fatalf("closed before the client closed; stderr:\n%s", p.Out)
			}
			c.Close()
			testnet.Eventually(t, 10*time.Second, p.logged(`msg="connection closed"`), "no closing line; stderr:\n%s", p.Out)
		})
	}
}
