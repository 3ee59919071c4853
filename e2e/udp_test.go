package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/darkit/protoplex"
	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/internal/udp/udptest"
)

// startUDPMux runs the configuration yaml (its listen and listen_udp are
// filled in with one port number) until the test ends and returns
// "127.0.0.1:port".
func startUDPMux(t *testing.T, yaml string) (string, *protoplex.ProtocolManager) {
	t.Helper()
	_, addr := loopbackPort(t)
	cfg, err := protoplex.ParseConfig([]byte(fmt.Sprintf("server:\n  listen: %q\n  listen_udp: %q\n%s", addr, addr, yaml)), "udp.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pm := protoplex.NewProtocolManager(protoplex.WithLogger(slog.New(slog.DiscardHandler)), protoplex.WithGracefulShutdownTimeout(2*time.Second), testDataPlane())
	if err := pm.UpdateConfig(cfg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); pm.Close(); pm.Wait() })
	if err := pm.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return addr, pm
}

// TestUDPRealClients: dig over UDP and over TCP to dnsmasq, and
// turnutils_stunclient over UDP to coturn, all through one protoplex
// serving TCP and UDP on the same port number.
func TestUDPRealClients(t *testing.T) {
	dns := startDnsmasq(t)
	stun := startTurnserver(t)
	requireBinary(t, "dig")
	requireBinary(t, "turnutils_stunclient")
	addr, pm := startUDPMux(t, fmt.Sprintf("protocols:\n  - name: dns\n    target: %q\n  - name: stun\n    target: %q\n", dns, stun))
	if n := len(pm.Addrs()); n != 2 {
		t.Fatalf("Addrs = %v, want a TCP and a UDP address", pm.Addrs())
	}
	host, p, _ := net.SplitHostPort(addr)
	for _, transport := range []string{"+notcp", "+tcp"} {
		out, err := run(t, 10*time.Second, "dig", "@"+host, "-p", p, transport, "+tries=1", "+time=3", "+short", "example.test", "A")
		if err != nil || strings.TrimSpace(out) != "192.0.2.7" {
			t.Fatalf("dig %s: %v\n%s", transport, err, out)
		}
	}
	out, err := run(t, 10*time.Second, "turnutils_stunclient", "-p", p, host)
	if err != nil || !strings.Contains(out, "UDP reflexive addr: 127.0.0.1:") {
		t.Fatalf("turnutils_stunclient: %v\n%s", err, out)
	}
}

// TestUDPManyFlows: 300 concurrent clients through one protoplex to a UDP
// echo that tags each answer with the client's first datagram; each
// client gets only its own answers. They come from 100 loopback addresses,
// three each, under the per-source cap of 64 flows.
func TestUDPManyFlows(t *testing.T) {
	echo := udptest.Echo(t, true)
	addr, _ := startUDPMux(t, fmt.Sprintf("protocols:\n  - name: mine\n    transport: udp\n    match_start_bytes: [\"6964\"]\n    target: %q\n", echo))
	const clients, rounds = 300, 5
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- oneFlow(net.IPv4(127, 0, 1, byte(1+i%100)), addr, fmt.Sprintf("id%03d", i), rounds)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// oneFlow sends id, then rounds more datagrams, each retried until its
// answer comes (UDP may drop under load), and checks every answer carries
// id.
func oneFlow(from net.IP, addr, id string, rounds int) error {
	d := net.Dialer{LocalAddr: &net.UDPAddr{IP: from}}
	c, err := d.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 256)
	for r := 0; r <= rounds; r++ {
		msg := id
		if r > 0 {
			msg = fmt.Sprintf("%s-%d", id, r)
		}
		want := id + "|" + msg
		got := ""
		for try := 0; try < 10 && got != want; try++ {
			if _, err := c.Write([]byte(msg)); err != nil {
				return err
			}
			_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			for {
				n, err := c.Read(buf)
				if err != nil {
					break // timeout: send again
				}
				got = string(buf[:n])
				if !strings.HasPrefix(got, id+"|") {
					return fmt.Errorf("%s got another flow's answer %q", id, got)
				}
				if got == want {
					break
				}
			}
		}
		if got != want {
			return fmt.Errorf("%s: no answer to %q", id, msg)
		}
	}
	return nil
}

// TestOpenVPNOverUDP: an OpenVPN client (--proto udp, the null device)
// completes its TLS session with an OpenVPN server through protoplex's UDP
// listener, on the port number its TCP listener also serves.
func TestOpenVPNOverUDP(t *testing.T) {
	openvpn := requireBinary(t, "/usr/sbin/openvpn")
	pki := t.TempDir()
	openVPNPKI(t, pki)
	port, vpn := loopbackPort(t)
	server := testnet.StartProcess(t, exec.Command(openvpn, "--dev", "null", "--proto", "udp", "--local", "127.0.0.1",
		"--lport", strconv.Itoa(port), "--tls-server", "--dh", "none", "--ca", filepath.Join(pki, "ca.crt"),
		"--cert", filepath.Join(pki, "server.crt"), "--key", filepath.Join(pki, "server.key"), "--verb", "3"))
	testnet.Eventually(t, 15*time.Second, func() bool { return strings.Contains(server.Out.String(), "UDPv4 link local") },
		"the OpenVPN server never bound its UDP port:\n%s", server.Out)
	addr, pm := startUDPMux(t, fmt.Sprintf("protocols:\n  - name: openvpn\n    target: %q\n", vpn))
	host, p, _ := net.SplitHostPort(addr)
	runUntil(t, 30*time.Second, "Initialization Sequence Completed", openvpn,
		"--dev", "null", "--proto", "udp", "--nobind", "--remote", host, p, "--tls-client", "--connect-retry-max", "1",
		"--ca", filepath.Join(pki, "ca.crt"), "--cert", filepath.Join(pki, "client.crt"), "--key", filepath.Join(pki, "client.key"), "--verb", "3")
	rec := httptest.NewRecorder()
	pm.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if !regexp.MustCompile(`(?m)^protoplex_udp_flows_total\{protocol="OpenVPN"\} [1-9]`).MatchString(rec.Body.String()) {
		t.Errorf("no OpenVPN UDP flow counted:\n%s", rec.Body)
	}
}
