//go:build linux

package e2e

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// portEcho is a UDP echo that answers each datagram with the source port
// it came from, then the datagram: "<port> <datagram>".
func portEcho(t *testing.T) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err == nil {
				_, _ = c.WriteToUDPAddrPort(fmt.Appendf(nil, "%d %s", from.Port(), buf[:n]), from)
			}
		}
	})
	t.Cleanup(func() { c.Close(); wg.Wait() })
	return c.LocalAddr().String()
}

// upgradeUDP sends SIGUSR2 to pid and waits for its log line; it returns
// the new process's pid and the UDP flows the old one moved, once the old
// process has exited.
func upgradeUDP(t *testing.T, p *testnet.Process, pid, u int) (next, flows int) {
	t.Helper()
	return upgradeOnce(t, p, pid, u, "udp_flows_moved")
}

// upgradeOnce sends SIGUSR2 to pid, the u-th upgrade of the binary whose
// stderr p holds, and waits for its log line and for the old process to
// exit; it returns the new process's pid and the count the line gives as
// count= (moved: connections; udp_flows_moved: UDP flows).
func upgradeOnce(t *testing.T, p *testnet.Process, pid, u int, count string) (next, n int) {
	t.Helper()
	line := regexp.MustCompile(`upgrade: the new process serves the listeners[^\n]*pid=(\d+)[^\n]* ` + count + `=(\d+)`)
	syscall.Kill(pid, syscall.SIGUSR2)
	var m [][]string
	testnet.Eventually(t, upgradeBound, func() bool {
		m = line.FindAllStringSubmatch(p.Out.String(), -1)
		return len(m) >= u
	}, "upgrade %d not logged; stderr:\n%s", u, testnet.Later(p.Out.String))
	next, _ = strconv.Atoi(m[u-1][1])
	n, _ = strconv.Atoi(m[u-1][2])
	testnet.Eventually(t, upgradeBound, func() bool { return !alive(pid) },
		"the old process %d still runs after upgrade %d; stderr:\n%s", pid, u, testnet.Later(p.Out.String))
	return next, n
}

// TestUpgradeMovesUDPFlows: the real binary is upgraded 3 times while 20
// UDP flows go on through it, each client sending a datagram as soon as
// the last was answered: every datagram is answered (none is lost or
// answered twice during a switch), and the backend sees each flow from
// the same source port from the first datagram to the last — the flows
// moved to each new process with their upstream sockets. Each old process
// is gone, and the newest counts the flows moved in.
func TestUpgradeMovesUDPFlows(t *testing.T) {
	const clients, upgrades = 20, 3
	backend := portEcho(t)
	bin := buildCLI(t)
	metricsPort := testnet.FreePort(t)
	_, udpAddr := loopbackPort(t)
	cfg := filepath.Join(t.TempDir(), "protoplex.yaml")
	testnet.WriteFile(t, cfg, fmt.Sprintf(`server:
  listen: "127.0.0.1:0"
  listen_udp: %q
  graceful_shutdown_timeout: "30s"
protocols:
  - name: uecho
    transport: udp
    match_start_bytes: ["6964"] # id
    target: %q
monitoring:
  bind_address: 127.0.0.1
  metrics_port: %d
  health_check_port: 0
`, udpAddr, backend, metricsPort))
	_, p, _ := startCLI(t, bin, "-config", cfg)
	pid := p.Cmd.Process.Pid
	t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL) }) // the new processes are in its group

	// Each client: a datagram, its answer, the next; the port the backend
	// saw must never change.
	var stop atomic.Bool
	var sent atomic.Int64
	errs := make(chan error, clients)
	ready := make(chan struct{}, clients)
	var wg sync.WaitGroup
	for i := range clients {
		c, err := net.Dial("udp", udpAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		wg.Go(func() {
			buf := make([]byte, 512)
			port := ""
			for seq := 0; !stop.Load(); seq++ {
				msg := fmt.Sprintf("id%02d-%d", i, seq)
				if _, err := c.Write([]byte(msg)); err != nil {
					errs <- fmt.Errorf("client %d: %v", i, err)
					return
				}
				_ = c.SetReadDeadline(time.Now().Add(upgradeBound))
				n, err := c.Read(buf)
				if err != nil {
					errs <- fmt.Errorf("client %d: no answer to %q (datagram lost): %v", i, msg, err)
					return
				}
				got, rest, _ := strings.Cut(string(buf[:n]), " ")
				if rest != msg {
					errs <- fmt.Errorf("client %d: %q answers %q (answered twice, or out of turn)", i, buf[:n], msg)
					return
				}
				if port == "" {
					port = got
					ready <- struct{}{}
				} else if got != port {
					errs <- fmt.Errorf("client %d: the backend saw port %s after %s at datagram %d: the flow restarted", i, got, port, seq)
					return
				}
				sent.Add(1)
			}
		})
	}
	for range clients {
		select {
		case <-ready:
		case err := <-errs:
			t.Fatal(err)
		case <-time.After(upgradeBound):
			t.Fatal("the flows did not start")
		}
	}

	current := pid
	for u := 1; u <= upgrades; u++ {
		before := sent.Load()
		var moved int
		current, moved = upgradeUDP(t, p, current, u)
		if moved < clients {
			t.Errorf("upgrade %d moved %d udp flows, want %d", u, moved, clients)
		}
		// The flows go on through the new process before the next.
		testnet.Eventually(t, upgradeBound, func() bool { return sent.Load() > before+10*clients },
			"the flows stalled after upgrade %d; stderr:\n%s", u, testnet.Later(p.Out.String))
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d datagrams answered over %d flows across %d upgrades", sent.Load(), clients, upgrades)
	for _, m := range regexp.MustCompile(`upgrade: the new process serves the listeners[^\n]* took=(\S+) udp_flows_moved=(\d+)`).FindAllStringSubmatch(p.Out.String(), -1) {
		t.Logf("upgrade: %s udp flows moved, %s from SIGUSR2 to the last batch acknowledged", m[2], m[1])
	}
	if t.Failed() {
		t.Logf("stderr:\n%s", p.Out)
	}
	if v := testnet.Metric(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort), "protoplex_upgrade_flows_moved_total"); v < clients {
		t.Errorf("the newest process counts %v udp flows moved in, want %d", v, clients)
	}
	if v := testnet.Metric(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort), "protoplex_udp_flows_active"); v != clients {
		t.Errorf("the newest process holds %v udp flows, want %d (none opened twice)", v, clients)
	}
}

// TestUpgradeKeepsOpenVPNSession: a real OpenVPN client's session over UDP
// (TLS, then a ping each second both ways) to a real OpenVPN server that
// does not float (it drops packets from any other source port) lives
// through 2 upgrades of the real binary: the server goes on reading the
// client's packets and the client the server's, no side restarts or
// renegotiates, and each old process is gone.
func TestUpgradeKeepsOpenVPNSession(t *testing.T) {
	openvpn := requireBinary(t, "/usr/sbin/openvpn")
	pki := t.TempDir()
	openVPNPKI(t, pki)
	vport, vpn := loopbackPort(t)
	status := filepath.Join(pki, "server.status")
	server := testnet.StartProcess(t, exec.Command(openvpn, "--dev", "null", "--proto", "udp", "--local", "127.0.0.1",
		"--lport", strconv.Itoa(vport), "--tls-server", "--dh", "none", "--ca", filepath.Join(pki, "ca.crt"),
		"--cert", filepath.Join(pki, "server.crt"), "--key", filepath.Join(pki, "server.key"),
		"--ping", "1", "--ping-restart", "30", "--status", status, "1", "--verb", "3"))
	testnet.Eventually(t, 15*time.Second, func() bool { return strings.Contains(server.Out.String(), "UDPv4 link local") },
		"the OpenVPN server never bound its UDP port:\n%s", server.Out)

	bin := buildCLI(t)
	_, udpAddr := loopbackPort(t)
	cfg := filepath.Join(t.TempDir(), "protoplex.yaml")
	testnet.WriteFile(t, cfg, fmt.Sprintf(`server:
  listen: "127.0.0.1:0"
  listen_udp: %q
  graceful_shutdown_timeout: "30s"
protocols:
  - name: openvpn
    target: %q
`, udpAddr, vpn))
	_, p, _ := startCLI(t, bin, "-config", cfg)
	pid := p.Cmd.Process.Pid
	t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL) })

	host, port, _ := net.SplitHostPort(udpAddr)
	client := testnet.StartProcess(t, exec.Command(openvpn, "--dev", "null", "--proto", "udp", "--nobind", "--remote", host, port,
		"--tls-client", "--ca", filepath.Join(pki, "ca.crt"), "--cert", filepath.Join(pki, "client.crt"),
		"--key", filepath.Join(pki, "client.key"), "--ping", "1", "--ping-restart", "30", "--verb", "3"))
	testnet.Eventually(t, 30*time.Second, func() bool { return strings.Contains(client.Out.String(), "Initialization Sequence Completed") },
		"the OpenVPN client did not connect:\n%s", testnet.Later(client.Out.String))

	readBytes := regexp.MustCompile(`(?m)^TCP/UDP read bytes,(\d+)`)
	serverRead := func() int {
		b, _ := os.ReadFile(status)
		m := readBytes.FindSubmatch(b)
		if m == nil {
			return 0
		}
		n, _ := strconv.Atoi(string(m[1]))
		return n
	}
	current := pid
	for u := 1; u <= 2; u++ {
		current, _ = upgradeUDP(t, p, current, u)
		// The server counts the client's pings again, from the port it
		// locked on: 3 more, each after the old process is gone.
		for range 3 {
			base := serverRead()
			testnet.Eventually(t, upgradeBound, func() bool { return serverRead() > base },
				"the server reads nothing of the client after upgrade %d; server:\n%s\nclient:\n%s", u,
				testnet.Later(server.Out.String), testnet.Later(client.Out.String))
		}
	}
	for name, out := range map[string]string{"server": server.Out.String(), "client": client.Out.String()} {
		for _, bad := range []string{"Inactivity timeout", "restarting", "Incoming packet rejected", "TLS Error"} {
			if strings.Contains(out, bad) {
				t.Errorf("the OpenVPN %s logged %q across the upgrades:\n%s", name, bad, out)
			}
		}
	}
	if n := strings.Count(client.Out.String(), "Initialization Sequence Completed"); n != 1 {
		t.Errorf("the client connected %d times, want once:\n%s", n, client.Out)
	}
	if n := strings.Count(server.Out.String(), "Peer Connection Initiated"); n != 1 {
		t.Errorf("the server saw %d sessions, want one:\n%s", n, server.Out)
	}
}
