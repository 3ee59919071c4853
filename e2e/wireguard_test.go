package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// TestWireGuardThroughUDP: two WireGuard peers (wireguard-go, configured
// with wg), each in a network namespace of its own, and protoplex's binary
// in a third between them (veth pairs; that namespace does not forward, so
// protoplex's UDP port is the only way across). Peer A's endpoint is
// protoplex's listen_udp address, whose WireGuard route targets peer B.
// curl in A's namespace fetches, over the tunnel, a page from nginx on B's
// tunnel address: the handshake and the data crossed protoplex both ways.
// wg shows the handshake on both peers, and B sees A at protoplex's
// address.
func TestWireGuardThroughUDP(t *testing.T) {
	ipBin := requireBinary(t, "ip")
	wgGo := requireBinary(t, "wireguard-go")
	wg := requireBinary(t, "wg")
	nginx := requireBinary(t, "nginx")
	curl := requireBinary(t, "curl")
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no /dev/net/tun here, wireguard-go cannot make its interface: %v", err)
	}
	// Names unique to this run: namespaces, veths and WireGuard interfaces
	// (whose control sockets are /var/run/wireguard/NAME.sock, shared by
	// every namespace).
	ns := fmt.Sprintf("ppwg%d", os.Getpid()%100000)
	nsA, nsX, nsB := ns+"-a", ns+"-x", ns+"-b"
	wgA, wgB := ns+"wa", ns+"wb"
	// wireguard-go leaves its control socket when it is killed.
	removeSockets := func() {
		for _, w := range []string{wgA, wgB} {
			os.Remove(filepath.Join("/var/run/wireguard", w+".sock"))
		}
	}
	removeSockets()
	t.Cleanup(removeSockets)
	ip := netnsChain(t, ipBin, [3]string{nsA, nsX, nsB}, [4]string{ns + "a0", ns + "x0", ns + "x1", ns + "b0"}, "10.211.0", "10.212.0")

	// The peers: an interface each, in its namespace, with a key pair.
	dir := t.TempDir()
	pub := map[string]string{}
	for _, p := range []struct{ ns, dev string }{{nsA, wgA}, {nsB, wgB}} {
		proc := testnet.StartProcess(t, exec.Command(ipBin, "netns", "exec", p.ns, wgGo, "-f", p.dev))
		testnet.Eventually(t, 15*time.Second, func() bool {
			_, err := os.Stat(filepath.Join("/var/run/wireguard", p.dev+".sock"))
			return err == nil
		}, "wireguard-go never made %s:\n%s", p.dev, proc.Out)
		key, err := run(t, 10*time.Second, wg, "genkey")
		if err != nil {
			t.Fatalf("wg genkey: %v %s", err, key)
		}
		testnet.WriteFile(t, filepath.Join(dir, p.dev+".key"), key)
		if pub[p.dev], err = runStdin(t, 10*time.Second, key, wg, "pubkey"); err != nil {
			t.Fatalf("wg pubkey: %v %s", err, pub[p.dev])
		}
		pub[p.dev] = strings.TrimSpace(pub[p.dev])
	}
	const bPort, muxPort = "51821", "51820"
	wgSet := func(args ...string) {
		t.Helper()
		if out, err := run(t, 10*time.Second, wg, append([]string{"set"}, args...)...); err != nil {
			t.Fatalf("wg set %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	wgSet(wgA, "private-key", filepath.Join(dir, wgA+".key"),
		"peer", pub[wgB], "endpoint", "10.211.0.1:"+muxPort, "allowed-ips", "10.213.0.2/32")
	wgSet(wgB, "private-key", filepath.Join(dir, wgB+".key"), "listen-port", bPort,
		"peer", pub[wgA], "allowed-ips", "10.213.0.1/32")
	ip("-n", nsA, "addr", "add", "10.213.0.1/24", "dev", wgA)
	ip("-n", nsA, "link", "set", wgA, "up")
	ip("-n", nsB, "addr", "add", "10.213.0.2/24", "dev", wgB)
	ip("-n", nsB, "link", "set", wgB, "up")

	// nginx on B's tunnel address says who asked.
	startPeerNginx(t, ipBin, nginx, curl, nsB, "10.213.0.2:80")
	in := func(n string, timeout time.Duration, args ...string) (string, error) {
		return run(t, timeout, ipBin, append([]string{"netns", "exec", n}, args...)...)
	}

	cfg := filepath.Join(t.TempDir(), "c.yaml")
	testnet.WriteFile(t, cfg, fmt.Sprintf(`server:
  listen: "10.211.0.1:0"
  listen_udp: "10.211.0.1:%s"
  access_log: true
protocols:
  - name: WireGuard
    target: "10.212.0.2:%s"
monitoring:
  metrics_port: 0
  health_check_port: 0
`, muxPort, bPort))
	_, mux, _ := startCLI(t, ipBin, "netns", "exec", nsX, buildCLI(t), "-config", cfg)

	// The first request waits for the handshake (WireGuard retries it
	// every 5 s); curl retries until the bound.
	var out string
	testnet.Eventually(t, 60*time.Second, func() bool {
		out, _ = in(nsA, 15*time.Second, curl, "-sS", "-m", "10", "http://10.213.0.2/")
		return out == "peer=10.213.0.1"
	}, "no page over the tunnel through protoplex (last: %q)\nprotoplex log:\n%s", out, mux.Out)
	for _, dev := range []string{wgA, wgB} {
		hs, err := run(t, 10*time.Second, wg, "show", dev, "latest-handshakes")
		if f := strings.Fields(hs); err != nil || len(f) != 2 || f[1] == "0" {
			t.Errorf("wg show %s latest-handshakes: %q %v, want a handshake", dev, hs, err)
		}
	}
	// B's peer is A at protoplex's address in B's network, not A's own.
	if ep, err := run(t, 10*time.Second, wg, "show", wgB, "endpoints"); err != nil || !regexp.MustCompile(`\t10\.212\.0\.1:\d+\n?$`).MatchString(ep) {
		t.Errorf("wg show %s endpoints: %q %v, want peer A at protoplex's 10.212.0.1", wgB, ep, err)
	}
}
