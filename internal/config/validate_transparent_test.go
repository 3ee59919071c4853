package config

import (
	"runtime"
	"strings"
	"testing"
)

// TestTransparentAndUnixChecks: unix: targets and listen addresses are
// checked as paths; transparent routes refuse what cannot honour the
// client's address, each error at its line.
func TestTransparentAndUnixChecks(t *testing.T) {
	long := "/" + strings.Repeat("a", 107)
	for _, tc := range []struct{ yaml, want string }{
		{"server:\n  listen: unix:run/p.sock\n" + ssh, `c.yaml:2: server.listen[0]: unix socket path "run/p.sock": want an absolute path`},
		{"server:\n  listen: unix:" + long + "\n" + ssh, "c.yaml:2: server.listen[0]: unix socket path"},
		{"server:\n  listen_udp: unix:/run/p.sock\n" + ssh, "c.yaml:2: server.listen_udp"},
		{"protocols:\n  - name: HTTP\n    target: unix:app.sock\n", `c.yaml:3: protocols[0] (HTTP): target "unix:app.sock": unix socket path "app.sock": want an absolute path`},
		{"server:\n  transparent: true\nprotocols:\n  - name: SSH\n    target: h:22\n    source: 127.0.0.2\n", "c.yaml:2: protocols[0] (SSH): transparent does not combine with source"},
		{"protocols:\n  - name: SSH\n    target: h:22\n    transparent: true\n    pool: {min_idle: 1}\n", "c.yaml:4: protocols[0] (SSH): transparent does not combine with pool.min_idle"},
		{"protocols:\n  - name: HTTP\n    target: unix:/run/app.sock\n    transparent: true\n", "c.yaml:4: protocols[0] (HTTP): transparent does not apply to a unix: target"},
		// UDP flows are not transparent: an entry that takes them is refused.
		{"server:\n  transparent: true\n  listen_udp: \":53\"\nprotocols:\n  - name: SSH\n    target: h:22\n  - name: DNS\n    target: h:53\n",
			"c.yaml:2: protocols[1] (DNS): transparent does not apply to UDP flows (server.listen_udp is set"},
		{"server:\n  listen_udp: \":443\"\nprotocols:\n  - name: QUIC\n    target: h:443\n    transparent: true\n", "c.yaml:6: protocols[0] (QUIC): transparent does not apply to UDP flows"},
		{"server:\n  listen_udp: \":9\"\nprotocols:\n  - name: mine\n    transport: udp\n    match_start_bytes: [\"aa\"]\n    target: h:9\n    transparent: true\n", "c.yaml:8: protocols[0] (mine): transparent does not apply to UDP flows"},
	} {
		_, err := Parse([]byte(tc.yaml), "c.yaml")
		if runtime.GOOS != "linux" && strings.Contains(tc.yaml, "transparent") {
			tc.want = "transparent mode is supported on Linux only"
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.yaml, err, tc.want)
		}
	}
	accepted := []string{
		"server:\n  listen: [\"unix:/run/protoplex.sock\", \":443\"]\n" + ssh,
		"protocols:\n  - name: HTTP\n    target: [\"unix:/run/app.sock;w=2\", \"127.0.0.1:8080\"]\n    send_proxy: v2\n    health_check: {interval: 5s, check: http}\n",
	}
	if runtime.GOOS == "linux" {
		accepted = append(accepted, "server:\n  transparent: true\n"+ssh, "protocols:\n  - name: SSH\n    target: h:22\n    transparent: true\n",
			// Transparent TCP beside UDP: DNS on TCP only, and a byte
			// protocol on TCP.
			"server:\n  transparent: true\n  listen_udp: \":53\"\nprotocols:\n  - name: DNS\n    transport: tcp\n    target: h:53\n  - name: mine\n    match_start_bytes: [\"aa\"]\n    target: h:9\n",
			// UDP beside transparent TCP when the UDP entry is not transparent.
			"server:\n  listen_udp: \":53\"\nprotocols:\n  - name: SSH\n    target: h:22\n    transparent: true\n  - name: DNS\n    target: h:53\n")
	}
	for _, y := range accepted {
		if _, err := Parse([]byte(y), "c.yaml"); err != nil {
			t.Errorf("%s: %v", y, err)
		}
	}
	c, err := Parse([]byte("server:\n  transparent: true\n"+ssh), "c.yaml")
	if runtime.GOOS != "linux" {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	ps, err := c.BuildProtocols()
	if err != nil || !ps[0].Transparent {
		t.Fatalf("server.transparent not carried to the route: %v %+v", err, ps)
	}
}
