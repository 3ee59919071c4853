package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// startNginxUnix runs nginx serving body on a TCP port (its readiness
// probe) and on the Unix socket sock, with PROXY protocol on the socket
// when proxy: the extra listen directive rides in the listen parameters.
func startNginxUnix(t *testing.T, body, sock string, proxy bool) {
	t.Helper()
	params := "; listen unix:" + sock
	if proxy {
		params += " proxy_protocol"
	}
	startNginxWith(t, body, "", params)
}

// TestUnixSockets: through the binary, curl over TCP reaches nginx on a
// Unix socket, plainly and with a PROXY v1 header that carries curl's TCP
// address (nginx reads it as on a TCP listener); curl --unix-socket reaches
// protoplex's own unix: listener and is routed like a TCP client.
func TestUnixSockets(t *testing.T) {
	dir := t.TempDir()
	plain, proxied, front := filepath.Join(dir, "plain.sock"), filepath.Join(dir, "proxied.sock"), filepath.Join(dir, "front.sock")
	startNginxUnix(t, "server=$server_addr client=$remote_addr", plain, false)
	startNginxUnix(t, "server=$server_addr client=$proxy_protocol_addr", proxied, true)
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	testnet.WriteFile(t, cfg, fmt.Sprintf(`server:
  listen: ["127.0.0.1:0", "unix:%s"]
protocols:
  - name: HTTP
    host: plain.test
    target: "unix:%s"
    health_check: {interval: 1s, check: http}
  - name: HTTP
    host: proxied.test
    target: "unix:%s;w=2"
    send_proxy: v1
monitoring:
  metrics_port: 0
  health_check_port: 0
`, front, plain, proxied))
	addr, p, _ := startCLI(t, buildCLI(t), "-config", cfg)
	curl := requireBinary(t, "curl")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"tcp to a unix backend", []string{"-H", "Host: plain.test", "http://" + addr + "/"}, "server=unix:" + plain + " client=unix:"},
		{"PROXY to a unix backend", []string{"--interface", "127.0.0.5", "-H", "Host: proxied.test", "http://" + addr + "/"}, "server=unix:" + proxied + " client=127.0.0.5"},
		{"unix listener", []string{"--unix-socket", front, "http://plain.test/"}, "server=unix:" + plain + " client=unix:"},
	} {
		out, err := run(t, 20*time.Second, curl, append([]string{"-sS"}, tc.args...)...)
		if err != nil || out != tc.want {
			t.Errorf("%s: %q %v, want %q\nprotoplex log:\n%s", tc.name, out, err, tc.want, p.Out)
		}
	}
	if strings.Contains(p.Out.String(), "backend dial failed") {
		t.Errorf("a dial failed:\n%s", p.Out)
	}
}
