package config

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/darkit/protoplex/protocols"
)

// Checks of values that are each valid alone but together would fail at
// start or silently do nothing.

// silence checks what is chosen when the client stays silent: at most one
// entry (server_first: true, the one server.on_timeout names, or a
// built-in server-first protocol such as FTP or SMTP), without route
// conditions, and a server_first_wait that ends before identify_timeout.
func (v *checker) silence(c *Config) {
	s := &c.Server
	onTimeout := c.onTimeoutEntry()
	if s.OnTimeout != "" && onTimeout < 0 {
		var names []string
		for _, p := range c.Protocols {
			names = append(names, p.Name)
		}
		hint := ""
		if best, ok := closest(s.OnTimeout, lower(names)); ok {
			hint = fmt.Sprintf(" (did you mean %q?)", best)
		}
		v.add(v.at("server", "on_timeout"), "server.on_timeout: %q names no protocols: entry%s; it names the entry chosen when the client stays silent", s.OnTimeout, hint)
	}
	chosen := -1
	for i, p := range c.Protocols {
		desc, builtin := protocols.Describe(p.Name)
		byNature := builtin && desc.ServerFirst && len(p.MatchStartBytes)+len(p.MatchRegexes) == 0
		if !p.ServerFirst && i != onTimeout && !byNature {
			continue
		}
		name := fmt.Sprintf("protocols[%d] (%s)", i, p.Name)
		where := v.at("protocols", fmt.Sprintf("#%d", i), "server_first")
		why := "server_first: true"
		switch {
		case i == onTimeout && !p.ServerFirst:
			where, why = v.at("server", "on_timeout"), "server.on_timeout"
		case byNature && !p.ServerFirst:
			where, why = v.at("protocols", fmt.Sprintf("#%d", i)), p.Name+" speaks first"
		}
		if keys := (protocols.Conditions{SNI: p.SNI, ALPN: p.ALPN, Hosts: p.Host}).Keys(); keys != 0 {
			v.add(where, "%s: chosen on client silence (%s) but routed by %s: a silent client sends none; put it on an entry without conditions", name, why, strings.Join(keys.Names(), "/"))
		}
		if chosen >= 0 {
			v.add(where, "%s: chosen on client silence (%s), as protocols[%d] (%s) is already: only one protocol can take the clients that stay silent", name, why, chosen, c.Protocols[chosen].Name)
			continue
		}
		chosen = i
	}
	if chosen >= 0 && s.ServerFirstWait >= s.IdentifyTimeout {
		v.add(v.at("server", "server_first_wait"), "server.server_first_wait: %v is not shorter than identify_timeout (%v): protocols[%d] (%s), chosen on client silence, would never be", s.ServerFirstWait, s.IdentifyTimeout, chosen, c.Protocols[chosen].Name)
	}
}

func lower(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = strings.ToLower(n)
	}
	return out
}

// proxyIn checks that accept_proxy and trusted_proxies come together:
// trusted_proxies alone trusts nobody (no header is read), accept_proxy
// alone refuses every connection that sends a PROXY header.
func (v *checker) proxyIn(s *Server) {
	switch {
	case len(s.TrustedProxies) > 0 && !s.AcceptProxy:
		v.add(v.at("server", "trusted_proxies"), "server.trusted_proxies: has no effect without accept_proxy: true (no PROXY header is read)")
	case s.AcceptProxy && len(s.TrustedProxies) == 0:
		v.add(v.at("server", "accept_proxy"), "server.accept_proxy: true with no trusted_proxies: a PROXY header is accepted only from those addresses, so every one would be refused; list the load balancers in trusted_proxies")
	}
}

// sharedPorts reports two listeners of one configuration on the same port
// of overlapping addresses (the metrics and health ports, a listen address):
// the second bind would fail at start.
func (v *checker) sharedPorts(c *Config) {
	type bind struct {
		key, host string
		port      int
		where     string
	}
	var binds []bind
	m := c.Monitoring
	for _, p := range []struct {
		key  string
		port int
	}{{"monitoring.metrics_port", m.MetricsPort}, {"monitoring.health_check_port", m.HealthCheckPort}} {
		if p.port > 0 && p.port <= 65535 {
			binds = append(binds, bind{p.key, m.BindAddress, p.port, v.at("monitoring", p.key[len("monitoring."):])})
		}
	}
	for i, l := range c.Server.Listen {
		host, port, err := net.SplitHostPort(l)
		n, err2 := strconv.Atoi(port)
		if err != nil || err2 != nil || n <= 0 || n > 65535 {
			continue // reported by server, or any free port
		}
		binds = append(binds, bind{fmt.Sprintf("server.listen[%d]", i), host, n, v.at("server", "listen")})
	}
	for i, b := range binds {
		for _, a := range binds[:i] {
			// Two listen addresses equal are reported by server already.
			if a.port == b.port && overlap(a.host, b.host) && !(strings.HasPrefix(a.key, "server.") && strings.HasPrefix(b.key, "server.") && a.host == b.host) {
				v.add(b.where, "%s: port %d is also %s's (%s): the second bind would fail", b.key, b.port, a.key, net.JoinHostPort(a.host, fmt.Sprint(a.port)))
				break
			}
		}
	}
}

// overlap reports whether binding hosts a and b on one port conflicts: the
// same host, or either every interface ("", 0.0.0.0, ::). Host names are
// compared as written.
func overlap(a, b string) bool {
	every := func(h string) bool {
		ip, err := netip.ParseAddr(h)
		return h == "" || err == nil && ip.IsUnspecified()
	}
	if every(a) || every(b) {
		return true
	}
	ia, errA := netip.ParseAddr(a)
	ib, errB := netip.ParseAddr(b)
	if errA == nil && errB == nil {
		return ia.Unmap() == ib.Unmap()
	}
	return strings.EqualFold(a, b)
}

// enables reports settings of a feature that is off: they would be
// ignored without a word.
func (v *checker) enables(c *Config) {
	sec := &c.Security
	if !sec.EnableRateLimit && sec.RateLimit != (RateLimit{}) {
		v.add(v.at("security", "rate_limit"), "security.rate_limit: set, but enable_rate_limit is not true: no rate limit applies")
	}
	if !sec.EnableDDoSGuard && sec.DDoSGuard != (DDoSGuard{}) {
		v.add(v.at("security", "ddos_guard"), "security.ddos_guard: set, but enable_ddos_guard is not true: no source is banned")
	}
	d := &c.Distributed
	if !d.Enable {
		if d.ServiceDiscovery.Enable {
			v.add(v.at("distributed", "service_discovery", "enable"), "distributed.service_discovery.enable: has no effect without distributed.enable: true")
		}
		if d.ConfigManager.Enable {
			v.add(v.at("distributed", "config_manager", "enable"), "distributed.config_manager.enable: has no effect without distributed.enable: true")
		}
	}
}

// checkEndpoint checks an etcd endpoint: host:port, or a URL of scheme
// http or https with one, or unix:// and a path.
func checkEndpoint(e string) error {
	scheme, rest, ok := strings.Cut(e, "://")
	if !ok {
		return checkHostPort(e, 1, false)
	}
	switch strings.ToLower(scheme) {
	case "http", "https":
		return checkHostPort(strings.TrimSuffix(rest, "/"), 1, false)
	case "unix", "unixs":
		if rest != "" {
			return nil
		}
	}
	return fmt.Errorf("%q: want host:port, http(s)://host:port or unix://path", e)
}

// checkName checks an sni or host entry: an exact name (an IP address too
// for host) or "*." and a name, which matches the names below it. Regular
// expressions and other globs are not supported: kept as literals they
// would match nothing.
func checkName(s string) error {
	const supported = `only exact names and a leading "*." wildcard (*.example.com: any name below example.com) are supported`
	name := strings.TrimSuffix(s, ".")
	if len(name) >= 2 && name[0] == '[' && name[len(name)-1] == ']' {
		if _, err := netip.ParseAddr(name[1 : len(name)-1]); err == nil {
			return nil // an IPv6 address as a Host header writes it
		}
	}
	switch {
	case name == "*":
		return fmt.Errorf("%q: to match every name, leave the condition out", s)
	case strings.ContainsAny(name, `^$[](){}+?|\`) || strings.Contains(strings.TrimPrefix(name, "*."), "*"):
		return fmt.Errorf("%q looks like a regular expression or a glob: %s", s, supported)
	case strings.HasPrefix(name, "."):
		return fmt.Errorf("%q: a leading dot is not supported; write \"*%s\" for the names below %s (and %q for itself)", s, name, name[1:], name[1:])
	}
	if !validHost(strings.TrimPrefix(name, "*.")) {
		return fmt.Errorf("%q is not a host name: %s", s, supported)
	}
	return nil
}
