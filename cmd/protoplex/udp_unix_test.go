//go:build unix

package main

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// dnsAnswer is what startDnsmasq's server answers for example.test A.
const dnsAnswer = "192.0.2.7"

// startDnsmasq runs dnsmasq on a free loopback port, answering
// example.test A with dnsAnswer; it is ready once dig gets that answer
// from it directly.
func startDnsmasq(t *testing.T) string {
	t.Helper()
	bin := testnet.RequireBinary(t, "/usr/sbin/dnsmasq")
	testnet.RequireBinary(t, "dig")
	port := testnet.FreePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	p := testnet.StartProcess(t, exec.Command(bin, "-k", "-C", "/dev/null", "--port="+strconv.Itoa(port), "--listen-address=127.0.0.1",
		"--bind-interfaces", "--no-resolv", "--no-hosts", "--pid-file=", "--user=root", "--log-facility=-", "--address=/example.test/"+dnsAnswer))
	testnet.Eventually(t, 15*time.Second, func() bool { return dig(addr) == dnsAnswer }, "dnsmasq never answered on %s:\n%s", addr, p.Out)
	return addr
}

// dig asks addr for example.test A over UDP, once, and returns the answer
// ("" when none came within a second).
func dig(addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, "dig", "@"+host, "-p", port, "+notcp", "+tries=1", "+time=1", "+short", "example.test", "A").Output()
	return strings.TrimSpace(string(out))
}

// udpFree reports whether addr can be bound for UDP now.
func udpFree(addr string) bool {
	pc, err := net.ListenPacket("udp", addr)
	if err == nil {
		pc.Close()
	}
	return err == nil
}

// udpConf is a configuration serving DNS to dns on the listen_udp
// addresses udp.
func udpConf(dns string, udp ...string) string {
	return fmt.Sprintf("server:\n  listen: \"127.0.0.1:0\"\n  listen_udp: [%s]\nprotocols:\n  - name: DNS\n    target: %q\nmonitoring:\n  metrics_port: 0\n  health_check_port: 0\n",
		`"`+strings.Join(udp, `", "`)+`"`, dns)
}

// TestListenUDPReload: SIGHUP rebinds server.listen_udp as it does
// server.listen. An added address answers dig; a reload with an address
// that cannot be bound is rejected whole, naming it, and every listener of
// the running configuration keeps answering; a removed address is
// released.
func TestListenUDPReload(t *testing.T) {
	dns := startDnsmasq(t)
	first, second := testnet.FreeAddr(t), testnet.FreeAddr(t)
	cfg := filepath.Join(t.TempDir(), "protoplex.yaml")
	testnet.WriteFile(t, cfg, udpConf(dns, first))
	p := start(t, "-config", cfg)
	p.waitLine(t, `^listening \(udp\): `+regexp.QuoteMeta(first)+`$`)
	if got := dig(first); got != dnsAnswer {
		t.Fatalf("dig through %s: %q; stderr:\n%s", first, got, p.Out)
	}

	testnet.WriteFile(t, cfg, udpConf(dns, first, second))
	p.Cmd.Process.Signal(syscall.SIGHUP)
	testnet.Eventually(t, 10*time.Second, func() bool { return dig(second) == dnsAnswer },
		"the listen_udp address a reload added never answered; stderr:\n%s", p.Out)
	if got := dig(first); got != dnsAnswer {
		t.Fatalf("dig through %s after the reload: %q", first, got)
	}

	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	taken := busy.LocalAddr().String()
	testnet.WriteFile(t, cfg, udpConf(dns, second, taken))
	p.Cmd.Process.Signal(syscall.SIGHUP)
	testnet.Eventually(t, 10*time.Second, p.logged("listen udp "+taken),
		"a reload with a busy listen_udp address was not rejected naming it; stderr:\n%s", p.Out)
	if !strings.Contains(p.Out.String(), "configuration rejected") {
		t.Fatalf("the busy address is logged but not as a rejected reload:\n%s", p.Out)
	}
	for _, a := range []string{first, second} {
		if got := dig(a); got != dnsAnswer {
			t.Fatalf("dig through %s after the rejected reload: %q; stderr:\n%s", a, got, p.Out)
		}
	}

	testnet.WriteFile(t, cfg, udpConf(dns, second))
	p.Cmd.Process.Signal(syscall.SIGHUP)
	testnet.Eventually(t, 10*time.Second, func() bool { return udpFree(first) },
		"the listen_udp address a reload removed is still bound; stderr:\n%s", p.Out)
	if got := dig(second); got != dnsAnswer {
		t.Fatalf("dig through %s after removing %s: %q", second, first, got)
	}
	if strings.Contains(p.Out.String(), "restart") {
		t.Fatalf("listen_udp logged as taking effect at restart:\n%s", p.Out)
	}
}
