package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// netnsRules is what docs/transparent.md tells a deployment to run on the
// protoplex host: a reply to a transparent socket (a backend on another
// host) or from a local backend's port is marked, and marked packets are
// delivered locally instead of routed on towards the client.
const netnsRules = `table inet protoplex {
  chain prerouting {
    type filter hook prerouting priority mangle; policy accept;
    meta l4proto tcp socket transparent 1 meta mark set 1
  }
  chain output {
    type route hook output priority mangle; policy accept;
    tcp sport %d meta mark set 1
  }
}
`

// TestTransparentNetns: a client, protoplex and a backend each in a
// network namespace of their own (veth pairs; the client and the backend
// route through protoplex's namespace, which does not forward), and a
// second backend in protoplex's namespace. With the documented rules both
// backends see the client's own address; without the policy rule the
// remote backend's replies never reach protoplex and the request times out.
func TestTransparentNetns(t *testing.T) {
	ipBin := requireBinary(t, "ip")
	nft := requireBinary(t, "nft")
	nginx := requireBinary(t, "nginx")
	curl := requireBinary(t, "curl")
	ns := fmt.Sprintf("pp%d", os.Getpid()%100000)
	cli, px, be := ns+"-c", ns+"-x", ns+"-b"
	ip := netnsChain(t, ipBin, [3]string{cli, px, be}, [4]string{ns + "-c0", ns + "-x0", ns + "-x1", ns + "-b0"}, "10.201.0", "10.202.0")
	ip("-n", cli, "route", "add", "default", "via", "10.201.0.1")
	ip("-n", be, "route", "add", "default", "via", "10.202.0.1")
	const localPort = 8081
	ip("-n", px, "rule", "add", "fwmark", "1", "lookup", "100")
	ip("-n", px, "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100")
	rules := filepath.Join(t.TempDir(), "rules.nft")
	testnet.WriteFile(t, rules, fmt.Sprintf(netnsRules, localPort))
	ip("netns", "exec", px, nft, "-f", rules)

	// in runs a client in namespace n.
	in := func(n string, timeout time.Duration, args ...string) (string, error) {
		return run(t, timeout, ipBin, append([]string{"netns", "exec", n}, args...)...)
	}
	far, near := "10.202.0.2:80", fmt.Sprintf("10.202.0.1:%d", localPort)
	for _, b := range []struct{ ns, addr string }{{be, far}, {px, near}} {
		startPeerNginx(t, ipBin, nginx, curl, b.ns, b.addr)
	}

	cfg := filepath.Join(t.TempDir(), "c.yaml")
	testnet.WriteFile(t, cfg, fmt.Sprintf(`server:
  listen: "10.201.0.1:0"
  transparent: true
protocols:
  - name: HTTP
    host: far.test
    target: %q
  - name: HTTP
    host: near.test
    target: %q
monitoring:
  metrics_port: 0
  health_check_port: 0
`, far, near))
	addr, p, _ := startCLI(t, ipBin, "netns", "exec", px, buildCLI(t), "-config", cfg)
	for _, host := range []string{"far.test", "near.test"} {
		out, err := in(cli, 20*time.Second, curl, "-sS", "-m", "10", "-H", "Host: "+host, "http://"+addr+"/")
		if err != nil || out != "peer=10.201.0.2" {
			t.Errorf("%s: %q %v, want the client's address\nprotoplex log:\n%s", host, out, err, p.Out)
		}
	}
	ip("-n", px, "rule", "del", "fwmark", "1", "lookup", "100")
	if out, err := in(cli, 20*time.Second, curl, "-sS", "-m", "2", "-H", "Host: far.test", "http://"+addr+"/"); err == nil {
		t.Errorf("without the policy rule the remote backend still answered: %q", out)
	}
}

// netnsChain makes three network namespaces in a row, left – middle –
// right (names ns), joined by two veth pairs (devs: left's, middle's two,
// right's) on the /24 networks left and right ("10.201.0"): the middle
// namespace has .1 on both, the outer ones .2, loopback is up in all. The
// namespaces (and with them the veths) are deleted when the test ends,
// after the processes started later; without ip netns (not root) the test
// is skipped. It returns a function running ip that fails the test.
func netnsChain(t *testing.T, ipBin string, ns [3]string, devs [4]string, left, right string) func(args ...string) {
	t.Helper()
	ip := func(args ...string) {
		t.Helper()
		if out, err := run(t, 10*time.Second, ipBin, args...); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	for _, n := range ns {
		exec.Command(ipBin, "netns", "del", n).Run() // left by a run that was killed
	}
	if out, err := run(t, 10*time.Second, ipBin, "netns", "add", ns[0]); err != nil {
		t.Skipf("ip netns unavailable here (needs root): %v %s", err, out)
	}
	// Deleting a namespace removes its veth ends; registered first, this runs
	// after every process in the namespaces has been stopped.
	t.Cleanup(func() {
		for _, n := range ns {
			exec.Command(ipBin, "netns", "del", n).Run()
		}
	})
	ip("netns", "add", ns[1])
	ip("netns", "add", ns[2])
	ip("link", "add", devs[0], "netns", ns[0], "type", "veth", "peer", "name", devs[1], "netns", ns[1])
	ip("link", "add", devs[2], "netns", ns[1], "type", "veth", "peer", "name", devs[3], "netns", ns[2])
	for _, a := range []struct{ ns, dev, addr string }{
		{ns[0], devs[0], left + ".2/24"}, {ns[1], devs[1], left + ".1/24"},
		{ns[1], devs[2], right + ".1/24"}, {ns[2], devs[3], right + ".2/24"},
	} {
		ip("-n", a.ns, "addr", "add", a.addr, "dev", a.dev)
		ip("-n", a.ns, "link", "set", a.dev, "up")
		ip("-n", a.ns, "link", "set", "lo", "up")
	}
	return ip
}

// startPeerNginx runs nginx in namespace ns on addr, answering every
// request with "peer=" and the client's address, and waits until curl in
// ns gets an answer from it.
func startPeerNginx(t *testing.T, ipBin, nginx, curl, ns, addr string) {
	t.Helper()
	dir := t.TempDir()
	testnet.WriteFile(t, filepath.Join(dir, "nginx.conf"), fmt.Sprintf(`daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path %[1]s/body; proxy_temp_path %[1]s/proxy; fastcgi_temp_path %[1]s/fcgi;
  uwsgi_temp_path %[1]s/uwsgi; scgi_temp_path %[1]s/scgi;
  server { listen %[2]s; location / { default_type text/plain; return 200 "peer=$remote_addr"; } }
}
`, dir, addr))
	p := testnet.StartProcess(t, exec.Command(ipBin, "netns", "exec", ns, nginx, "-p", dir, "-c", filepath.Join(dir, "nginx.conf")))
	testnet.Eventually(t, 15*time.Second, func() bool {
		_, err := run(t, 5*time.Second, ipBin, "netns", "exec", ns, curl, "-s", "-m", "1", "http://"+addr+"/")
		return err == nil
	}, "nginx on %s never answered:\n%s", addr, p.Out)
}
