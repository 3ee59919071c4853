package e2e

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// TestSendProxyToNginx: nginx listening with proxy_protocol sees the real
// client address (127.0.0.7) behind protoplex, with v1 and v2 headers.
func TestSendProxyToNginx(t *testing.T) {
	nginx := startNginxWith(t, "client=$proxy_protocol_addr", "", "proxy_protocol")
	curl := requireBinary(t, "curl")
	for _, v := range []string{"v1", "v2"} {
		addr, _ := startConfigured(t, fmt.Sprintf("protocols:\n  - name: HTTP\n    target: %q\n    send_proxy: %s\n", nginx, v))
		out, err := run(t, 20*time.Second, curl, "-sS", "--interface", "127.0.0.7", "http://"+addr+"/")
		if err != nil || out != "client=127.0.0.7" {
			t.Fatalf("%s: %v %q", v, err, out)
		}
	}
}

// TestBehindHAProxy: haproxy (send-proxy-v2) in front of protoplex
// (accept_proxy, trusting 127.0.0.1): the deny list and the logs apply to the
// real client address, not haproxy's.
func TestBehindHAProxy(t *testing.T) {
	haproxy := requireBinary(t, "haproxy")
	web := startNginx(t, "behind haproxy", "")
	pp, pm := startConfigured(t, fmt.Sprintf(`
server:
  accept_proxy: true
  trusted_proxies: ["127.0.0.1/32"]
security:
  ip_blacklist: ["127.0.0.8"]
protocols:
  - name: HTTP
    target: %q
`, web))
	port := testnet.FreePort(t)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global
  maxconn 256
defaults
  mode tcp
  timeout connect 5s
  timeout client 10s
  timeout server 10s
frontend f
  bind 127.0.0.1:%d
  default_backend b
backend b
  server pp %s send-proxy-v2 source 127.0.0.1
`, port, pp)
	testnet.WriteFile(t, filepath.Join(dir, "haproxy.cfg"), cfg)
	front := fmt.Sprintf("127.0.0.1:%d", port)
	daemon(t, front, haproxy, "-db", "-f", filepath.Join(dir, "haproxy.cfg"))
	curl := requireBinary(t, "curl")
	out, err := run(t, 20*time.Second, curl, "-sS", "--interface", "127.0.0.9", "http://"+front+"/")
	if err != nil || out != "behind haproxy" {
		t.Fatalf("allowed client: %v %q", err, out)
	}
	out, err = run(t, 20*time.Second, curl, "-sS", "--interface", "127.0.0.8", "http://"+front+"/")
	if err == nil {
		t.Fatalf("denied client (by its real address) got %q", out)
	}
	if m := pm.GetMetrics().Security; m.BlacklistedDenied != 1 {
		t.Fatalf("%+v", m)
	}
	// Untrusted sources may not send PROXY headers themselves.
	c, err := dialFrom("127.0.0.10", pp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "PROXY TCP4 10.1.1.1 127.0.0.1 1234 80\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _ := c.Read(make([]byte, 64)); n != 0 {
		t.Fatal("spoofed PROXY header from an untrusted source was served")
	}
}
