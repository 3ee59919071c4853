//go:build unix

package main

import (
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// TestSocketActivationUDP: the shipped socket unit's layout, a stream
// socket and a UDP socket on one port number, passed by
// systemd-socket-activate (two of them chained: the outer passes the
// stream socket through the inner one, which adds the datagram socket, so
// protoplex gets LISTEN_FDS=2). protoplex serves SSH on the stream socket
// and DNS (dig to dnsmasq) on the UDP socket, which it matches to its
// server.listen_udp entry, binding neither server.listen nor anything else;
// a reload that adds a listen_udp address binds it.
func TestSocketActivationUDP(t *testing.T) {
	activate := testnet.RequireBinary(t, "systemd-socket-activate")
	dns := startDnsmasq(t)
	ssh := testnet.Banner(t, "A:")
	addr, configured, added := testnet.FreeAddr(t), testnet.FreeAddr(t), testnet.FreeAddr(t)
	cfg := filepath.Join(t.TempDir(), "protoplex.yaml")
	conf := func(udp ...string) string {
		return fmt.Sprintf("server:\n  listen: %q\n  listen_udp: [\"%s\"]\nprotocols:\n  - name: SSH\n    target: %q\n  - name: DNS\n    target: %q\nmonitoring:\n  metrics_port: 0\n  health_check_port: 0\n",
			configured, strings.Join(udp, `", "`), ssh, dns)
	}
	// The file names the address of the datagram socket by another
	// spelling: they are matched by address.
	named := "localhost:" + addr[strings.LastIndexByte(addr, ':')+1:]
	testnet.WriteFile(t, cfg, conf(named))
	p := startCmd(t, exec.Command(activate, "-l", addr, activate, "-d", "-l", addr, binary, "-config", cfg))
	testnet.Eventually(t, 10*time.Second, func() bool { return ask(addr, "SSH-2.0-first\r\n") == "A:SSH-2.0-first\r\n" },
		"no answer through the activated stream socket %s; output:\n%s", addr, p.Out)
	p.waitLine(t, `^listening: `+regexp.QuoteMeta(addr)+` \(socket activation\)\n(?:.*\n)*listening \(udp\): `+regexp.QuoteMeta(addr)+` \(socket activation\)$`)
	if got := dig(addr); got != dnsAnswer {
		t.Fatalf("dig through the activated UDP socket %s: %q; output:\n%s", addr, got, p.Out)
	}
	if n := strings.Count(p.stdout.String(), "listening"); n != 2 {
		t.Fatalf("stdout lists %d sockets, want the two inherited:\n%s", n, p.stdout)
	}
	if testnet.Listening(configured) {
		t.Fatalf("server.listen %s bound besides the inherited socket", configured)
	}

	testnet.WriteFile(t, cfg, conf(named, added))
	p.Cmd.Process.Signal(syscall.SIGHUP)
	testnet.Eventually(t, 10*time.Second, func() bool { return dig(added) == dnsAnswer },
		"the listen_udp address a reload added never answered; output:\n%s", p.Out)
	if got := dig(addr); got != dnsAnswer {
		t.Fatalf("dig through the activated UDP socket after the reload: %q", got)
	}
}

// TestSocketActivationUDPRefused: where socket activation and
// server.listen_udp disagree, protoplex does not start (exit 1) and says
// why: a UDP socket passed that no listen_udp entry names, a listen_udp
// entry that no socket serves and that cannot be bound, and a datagram
// socket that is not UDP.
func TestSocketActivationUDPRefused(t *testing.T) {
	activate := testnet.RequireBinary(t, "systemd-socket-activate")
	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, tc := range []struct {
		name, passed, udp, want string
		datagram                bool
	}{
		{"unnamed socket", testnet.FreeAddr(t), testnet.FreeAddr(t), "that no server.listen_udp address names", true},
		{"entry not had", testnet.FreeAddr(t), busy.LocalAddr().String(), "server.listen_udp: protoplex: listen udp " + busy.LocalAddr().String(), false},
		// A datagram socket that is not UDP (a Unix one) is none of ours.
		{"unix datagram", filepath.Join(t.TempDir(), "d.sock"), testnet.FreeAddr(t), "fd 3: ", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "protoplex.yaml")
			testnet.WriteFile(t, cfg, fmt.Sprintf("server:\n  listen_udp: %q\nprotocols:\n  - name: DNS\n    target: \"127.0.0.1:53\"\nmonitoring:\n  metrics_port: 0\n  health_check_port: 0\n", tc.udp))
			args := []string{"-l", tc.passed, binary, "-config", cfg}
			if tc.datagram {
				args = append([]string{"-d"}, args...)
			}
			p := testnet.StartProcess(t, exec.Command(activate, args...))
			testnet.Eventually(t, 10*time.Second, func() bool {
				if tc.datagram {
					network := "udp"
					if strings.HasPrefix(tc.passed, "/") {
						network = "unixgram"
					}
					if c, err := net.Dial(network, tc.passed); err == nil {
						c.Write([]byte("wake"))
						c.Close()
					}
				} else {
					ask(tc.passed, "x")
				}
				return strings.Contains(p.Out.String(), "Execing")
			}, "systemd-socket-activate never started protoplex; output:\n%s", p.Out)
			select {
			case <-p.Exited():
			case <-time.After(10 * time.Second):
				t.Fatalf("still running; output:\n%s", p.Out)
			}
			err := p.Wait()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitFail || !strings.Contains(p.Out.String(), tc.want) ||
				(tc.name == "unix datagram" && !strings.Contains(p.Out.String(), "a stream socket that listens or a UDP socket is needed")) {
				t.Fatalf("exit %v, want 1 and %q; output:\n%s", err, tc.want, p.Out)
			}
		})
	}
}
