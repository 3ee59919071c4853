package config

import (
	"strings"
	"testing"
	"time"
)

// TestUDPChecks: listen_udp addresses, the flow bound, the idle timeout and
// transport are checked, each error at its line.
func TestUDPChecks(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"server:\n  listen_udp: nohost\n" + ssh, `c.yaml:2: server.listen_udp: "nohost": want host:port`},
		{"server:\n  listen_udp: [\":53\", \":53\"]\n" + ssh, `server.listen_udp ":53": listed twice`},
		{"server:\n  max_udp_flows: 2000000\n" + ssh, "c.yaml:2: server.max_udp_flows: 2000000 is outside [0, 1048576]"},
		{"server:\n  max_udp_flows: -1\n" + ssh, "server.max_udp_flows: -1"},
		{"server:\n  max_udp_flows_per_source: 2000000\n" + ssh, "c.yaml:2: server.max_udp_flows_per_source: 2000000 is outside [0, 1048576]"},
		{"server:\n  max_udp_flows_per_source: -1\n" + ssh, "server.max_udp_flows_per_source: -1"},
		{"server:\n  udp_idle_timeout: 10ms\n" + ssh, "c.yaml:2: server.udp_idle_timeout: 10ms, want 0 (by protocol) or 1s to 24h0m0s"},
		{"protocols:\n  - name: DNS\n    target: h:53\n    transport: sctp\n", `c.yaml:4: protocols[0] (DNS): transport "sctp": want tcp or udp`},
		{"protocols:\n  - name: SSH\n    target: h:22\n    transport: udp\n", "c.yaml:4: protocols[0] (SSH): transport udp: SSH exists on tcp only"},
		{"protocols:\n  - name: DNS\n    target: h:53\n    udp_idle_timeout: 10ms\n", "c.yaml:4: protocols[0] (DNS): udp_idle_timeout: 10ms, want 0 (the server's) or 1s to 24h0m0s"},
		{"protocols:\n  - name: DNS\n    target: h:53\n    udp_responses: -2\n", "c.yaml:4: protocols[0] (DNS): udp_responses: -2, want 0 (the protocol's default), -1 (no limit) or 1 to 1000000"},
	} {
		_, err := Parse([]byte(tc.yaml), "c.yaml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.yaml, err, tc.want)
		}
	}
	c, err := Parse([]byte("server:\n  listen_udp: [\":53\", \"127.0.0.1:443\"]\n  max_udp_flows: 500\n  max_udp_flows_per_source: 3\n  udp_idle_timeout: 30s\n"+
		"protocols:\n  - name: DNS\n    target: h:53\n    transport: UDP\n    udp_idle_timeout: 3s\n    udp_responses: 2\n  - name: game\n    transport: udp\n    match_start_bytes: [\"fefd\"]\n    target: h:7777\n"), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if s := c.Server; len(s.ListenUDP) != 2 || s.MaxUDPFlows != 500 || s.MaxUDPFlowsPerSource != 3 || s.UDPIdleTimeout != 30*time.Second {
		t.Fatalf("server = %+v", s)
	}
	protos, err := c.BuildProtocols()
	if err != nil {
		t.Fatal(err)
	}
	if protos[0].UDPIdleTimeout != 3*time.Second || protos[0].UDPResponses != 2 {
		t.Errorf("DNS udp_idle_timeout %v, want 3s", protos[0].UDPIdleTimeout)
	}
	for _, p := range protos {
		if spec := p.Spec(); spec.Datagram == nil || spec.Transports.String() != "udp" {
			t.Errorf("%s: transports %v, want udp with a datagram detector", p.Name, spec.Transports)
		}
	}
}
