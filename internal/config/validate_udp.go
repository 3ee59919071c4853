package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/darkit/protoplex/internal/udp"
	"github.com/darkit/protoplex/protocols"
)

// Bounds of the UDP keys that are the config's own; max_udp_flows and
// max_udp_flows_per_source are rows of serverSettings, bounded by the udp
// package, which pays for them.
const (
	maxUDPListeners   = 64
	maxUDPIdleTimeout = 24 * time.Hour
)

// UDP is the settings the UDP engine follows.
func (s *Server) UDP() udp.Settings {
	return udp.Settings{MaxFlows: s.MaxUDPFlows, MaxFlowsPerSource: s.MaxUDPFlowsPerSource, IdleTimeout: s.UDPIdleTimeout, AccessLog: s.AccessLog}
}

// udp checks server.listen_udp, udp_idle_timeout and each entry's
// transport.
func (v *checker) udp(c *Config) {
	s := &c.Server
	if len(s.ListenUDP) > maxUDPListeners {
		v.add(v.at("server", "listen_udp"), "server.listen_udp: %d addresses, at most %d", len(s.ListenUDP), maxUDPListeners)
	}
	seen := map[string]bool{}
	for i, a := range s.ListenUDP {
		where := v.at("server", "listen_udp", fmt.Sprintf("#%d", i))
		if err := checkHostPort(a, 0, true); err != nil {
			v.add(where, "server.listen_udp: %v", err)
		} else if seen[a] {
			v.add(where, "server.listen_udp %q: listed twice", a)
		}
		seen[a] = true
	}
	if s.UDPIdleTimeout != 0 && (s.UDPIdleTimeout < time.Second || s.UDPIdleTimeout > maxUDPIdleTimeout) {
		v.add(v.at("server", "udp_idle_timeout"), "server.udp_idle_timeout: %v, want 0 (by protocol) or 1s to %v", s.UDPIdleTimeout, maxUDPIdleTimeout)
	}
	for i, p := range c.Protocols {
		if d := p.UDPIdleTimeout; d != 0 && (d < time.Second || d > maxUDPIdleTimeout) {
			v.add(v.at("protocols", fmt.Sprintf("#%d", i), "udp_idle_timeout"), "protocols[%d] (%s): udp_idle_timeout: %v, want 0 (the server's) or 1s to %v", i, p.Name, d, maxUDPIdleTimeout)
		}
		if n := p.UDPResponses; n < -1 || n > udp.MaxResponses {
			v.add(v.at("protocols", fmt.Sprintf("#%d", i), "udp_responses"), "protocols[%d] (%s): udp_responses: %d, want 0 (the protocol's default), -1 (no limit) or 1 to %d", i, p.Name, n, udp.MaxResponses)
		}
		if p.Transport == "" {
			continue
		}
		where := v.at("protocols", fmt.Sprintf("#%d", i), "transport")
		name := fmt.Sprintf("protocols[%d] (%s)", i, p.Name)
		t := strings.ToLower(p.Transport)
		if t != "tcp" && t != "udp" {
			v.add(where, "%s: transport %q: want tcp or udp", name, p.Transport)
			continue
		}
		if d, ok := protocols.Describe(p.Name); ok && len(p.MatchStartBytes)+len(p.MatchRegexes) == 0 {
			want := protocols.TCP
			if t == "udp" {
				want = protocols.UDP
			}
			if d.Transports&want == 0 {
				v.add(where, "%s: transport %s: %s exists on %s only", name, t, d.Name, d.Transports)
			}
		}
	}
}
