package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// transparentConfig is a config with server.transparent on, one HTTP route
// to web, and 127.0.0.1 a trusted PROXY front.
func transparentConfig(t *testing.T, web string) string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	testnet.WriteFile(t, cfg, fmt.Sprintf(`server:
  listen: "127.0.0.1:0"
  transparent: true
  accept_proxy: true
  trusted_proxies: [127.0.0.1/32]
protocols:
  - name: HTTP
    target: %q
monitoring:
  metrics_port: 0
  health_check_port: 0
`, web))
	return cfg
}

// TestTransparentRealClient: curl from 127.0.0.5 through the binary with
// server.transparent to nginx on 127.0.0.1, which answers with the peer it
// sees: 127.0.0.5, not protoplex's 127.0.0.1 (on loopback every 127/8
// address is local, so nginx's reply needs no routing rule to come back).
// A client a trusted front names in a PROXY header is the address used.
func TestTransparentRealClient(t *testing.T) {
	web := startNginx(t, "peer=$remote_addr", "")
	addr, p, _ := startCLI(t, buildCLI(t), "-config", transparentConfig(t, web))
	out, err := run(t, 20*time.Second, requireBinary(t, "curl"), "-sS", "--interface", "127.0.0.5", "http://"+addr+"/")
	if err != nil || out != "peer=127.0.0.5" {
		t.Fatalf("curl --interface 127.0.0.5: %q %v\nprotoplex log:\n%s", out, err, p.Out)
	}
	reply := exchangeWith(addr, "PROXY TCP4 127.0.0.9 127.0.0.1 5555 443\r\nGET / HTTP/1.0\r\n\r\n")
	if !strings.HasSuffix(reply, "\r\n\r\npeer=127.0.0.9") {
		t.Fatalf("client named by PROXY: backend answered %q\nprotoplex log:\n%s", reply, p.Out)
	}
}

// TestTransparentNeedsCapability: without CAP_NET_ADMIN (and CAP_NET_RAW,
// which the kernel accepts too) the dial fails and the log says which
// capability is missing.
func TestTransparentNeedsCapability(t *testing.T) {
	setpriv := requireBinary(t, "setpriv")
	web := startNginx(t, "peer=$remote_addr", "")
	addr, p, _ := startCLI(t, setpriv, "--inh-caps=-net_admin,-net_raw", "--bounding-set=-net_admin,-net_raw", buildCLI(t), "-config", transparentConfig(t, web))
	run(t, 20*time.Second, requireBinary(t, "curl"), "-sS", "--interface", "127.0.0.5", "http://"+addr+"/")
	testnet.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(p.Out.String(), "transparent mode needs CAP_NET_ADMIN")
	}, "no capability hint in the log:\n%s", p.Out)
}
