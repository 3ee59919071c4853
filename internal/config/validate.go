package config

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/darkit/protoplex/internal/guard"
	"github.com/darkit/protoplex/internal/udp"
	"github.com/darkit/protoplex/internal/upstream"
)

// Validate checks every value of c and reports every error at once, each
// with file:line when c came from a file.
func (c *Config) Validate() error { return c.validate(c.Source, nil) }

// CheckServer checks the server: settings the Go options set, naming each
// by its option (MaxConnections, ...), against the bounds of the file.
func CheckServer(s Server) error {
	v := &checker{goNames: true}
	v.server(&s)
	return v.err()
}

// ErrNoProtocols explains a configuration without protocols.
const ErrNoProtocols = "no protocols: every connection would be refused (an empty or truncated file?); list at least one"

// checker collects validation errors; root, when set, gives their lines.
type checker struct {
	file    string
	root    *yaml.Node
	goNames bool // name server settings by Go option, not by YAML key
	errs    []error
}

func (c *Config) validate(file string, root *yaml.Node) error {
	return errors.Join(c.check(file, root)...)
}

// check returns every error of c; root, when set, gives their lines.
func (c *Config) check(file string, root *yaml.Node) []error {
	v := &checker{file: file, root: root}
	v.server(&c.Server)
	v.security(&c.Security)
	v.monitoring(&c.Monitoring)
	v.distributed(&c.Distributed)
	v.protocols(c)
	v.silence(c)
	v.proxyIn(&c.Server)
	v.sharedPorts(c)
	v.enables(c)
	v.transparent(c)
	v.udp(c)
	return v.errs
}

func (v *checker) err() error { return errors.Join(v.errs...) }

// at is the "file:line: " prefix of the value at path (keys, or "#i" for
// list items).
func (v *checker) at(path ...string) string {
	if l := lineOf(v.root, path...); l > 0 {
		return fmt.Sprintf("%s:%d: ", v.file, l)
	}
	if v.file != "" {
		return v.file + ": "
	}
	return ""
}

func (v *checker) add(where, format string, a ...any) {
	v.errs = append(v.errs, fmt.Errorf(where+format, a...))
}

func (v *checker) intIn(where, key string, x, lo, hi int) {
	if x < lo || x > hi {
		v.add(where, "%s: %d is outside [%d, %d]", key, x, lo, hi)
	}
}

func (v *checker) durIn(where, key string, x, lo, hi time.Duration) {
	if x < lo || x > hi {
		v.add(where, "%s: %v is outside [%v, %v]", key, x, lo, hi)
	}
}

// setting is one bounded server: value: its Go option name, its YAML key,
// its value and inclusive range.
type setting struct {
	name, key string
	v, lo, hi int64
	duration  bool
}

func serverSettings(s *Server) []setting {
	d := func(name, key string, v, lo, hi time.Duration) setting {
		return setting{name, key, int64(v), int64(lo), int64(hi), true}
	}
	return []setting{
		{"MaxConnections", "max_connections", int64(s.MaxConnections), 1, maxMaxConnections, false},
		{"BufferSize", "buffer_size", int64(s.BufferSize), minBufferSize, maxBufferSize, false},
		d("IdentifyTimeout", "identify_timeout", s.IdentifyTimeout, 1, maxIdentifyTimeout),
		d("IdentifyReadTimeout", "identify_read_timeout", s.IdentifyReadTimeout, 0, maxIdentifyReadTimeout),
		d("CacheTTL", "cache_ttl", s.CacheTTL, 0, maxCacheTTL),
		d("DialTimeout", "dial_timeout", s.DialTimeout, 1, maxDialTimeout),
		d("GracefulShutdownTimeout", "graceful_shutdown_timeout", s.GracefulShutdownTimeout, 0, maxGracefulTimeout),
		d("ServerFirstWait", "server_first_wait", s.ServerFirstWait, 0, maxServerFirstWait),
		d("IdleTimeout", "idle_timeout", s.IdleTimeout, 0, maxIdleTimeout),
		d("TCPKeepAlive", "tcp_keepalive", s.TCPKeepAlive, 0, maxTCPKeepAlive),
		{"EventLoops", "event_loops", int64(s.EventLoops), 0, maxEventLoops, false},
		{"MaxUDPFlows", "max_udp_flows", int64(s.MaxUDPFlows), 0, udp.MaxMaxFlows, false},
		{"MaxUDPFlowsPerSource", "max_udp_flows_per_source", int64(s.MaxUDPFlowsPerSource), 0, udp.MaxMaxFlowsPerSource, false},
	}
}

func (v *checker) server(s *Server) {
	name := func(st setting) string {
		if v.goNames {
			return st.name
		}
		return "server." + st.key
	}
	for _, st := range serverSettings(s) {
		where := v.at("server", st.key)
		switch {
		case st.v < 0 && st.duration:
			v.add(where, "%s: must not be negative", name(st))
		case st.v < st.lo || st.v > st.hi:
			if st.duration {
				v.add(where, "%s: %v is outside [%v, %v]", name(st), time.Duration(st.v), time.Duration(st.lo), time.Duration(st.hi))
			} else {
				v.add(where, "%s: %d is outside [%d, %d]", name(st), st.v, st.lo, st.hi)
			}
		}
	}
	// The one bound that depends on another value.
	if s.IdentifyMinBytes <= 0 || s.IdentifyMinBytes > s.BufferSize {
		n := "server.identify_min_bytes"
		if v.goNames {
			n = "IdentifyMinBytes"
		}
		v.add(v.at("server", "identify_min_bytes"), "%s: must be > 0 and <= buffer_size (%d), got %d", n, s.BufferSize, s.IdentifyMinBytes)
	}
	v.dataPlane(s.DataPlane)
	if v.goNames {
		return // the rest are file-only keys
	}
	if len(s.Listen) > maxListen {
		v.add(v.at("server", "listen"), "server.listen: %d addresses, at most %d", len(s.Listen), maxListen)
	}
	for i, l := range s.Listen {
		if err := checkListen(l); err != nil {
			v.add(v.at("server", "listen"), "server.listen[%d]: %v", i, err)
		}
		// A second bind of an address would fail, and listeners are keyed
		// by address on reload.
		if j := slices.Index(s.Listen, l); j < i {
			v.add(v.at("server", "listen"), "server.listen[%d]: %q is listed twice", i, l)
		}
	}
	if f := strings.ToLower(s.LogFormat); f != "" && f != "text" && f != "json" {
		v.add(v.at("server", "log_format"), "server.log_format: %q: want text or json", s.LogFormat)
	}
	if s.LogLevel != "" {
		var level slog.Level
		if err := level.UnmarshalText([]byte(s.LogLevel)); err != nil {
			v.add(v.at("server", "log_level"), "server.log_level: %q: want debug, info, warn or error", s.LogLevel)
		}
	}
	if len(s.TrustedProxies) > maxTrustedProxies {
		v.add(v.at("server", "trusted_proxies"), "server.trusted_proxies: %d entries, at most %d", len(s.TrustedProxies), maxTrustedProxies)
	}
	for i, p := range s.TrustedProxies {
		if _, err := ParsePrefix(p); err != nil {
			v.add(v.at("server", "trusted_proxies", fmt.Sprintf("#%d", i)), "server.trusted_proxies[%d]: %v", i, err)
		}
	}
}

// dataPlane checks server.data_plane: empty (the default, events) or one of
// the two values, spelt exactly as the data plane compares them.
func (v *checker) dataPlane(p string) {
	if p == "" || p == DataPlaneEvents || p == DataPlaneGoroutines {
		return
	}
	n := "server.data_plane"
	if v.goNames {
		n = "DataPlane"
	}
	hint := ""
	if best, ok := closest(p, []string{DataPlaneEvents, DataPlaneGoroutines}); ok {
		hint = fmt.Sprintf(" (did you mean %q?)", best)
	}
	v.add(v.at("server", "data_plane"), "%s: %q: want %s or %s%s", n, p, DataPlaneEvents, DataPlaneGoroutines, hint)
}

func (v *checker) security(sec *Security) {
	for _, list := range []struct {
		key   string
		items []string
	}{{"ip_whitelist", sec.IPWhitelist}, {"ip_blacklist", sec.IPBlacklist}} {
		for i, e := range list.items {
			if _, err := ParsePrefix(e); err != nil {
				v.add(v.at("security", list.key, fmt.Sprintf("#%d", i)), "security.%s[%d]: %v", list.key, i, err)
			}
		}
	}
	rl := sec.RateLimit
	if r := rl.RequestsPerSecond; math.IsNaN(r) || r < 0 || r > guard.MaxRequestsPerSecond || (sec.EnableRateLimit && r == 0) {
		v.add(v.at("security", "rate_limit", "requests_per_second"), "security.rate_limit.requests_per_second: %v is outside (0, %g]", r, float64(guard.MaxRequestsPerSecond))
	}
	v.intIn(v.at("security", "rate_limit", "burst_size"), "security.rate_limit.burst_size", rl.BurstSize, 0, guard.MaxBurstSize)
	v.intIn(v.at("security", "max_connections_per_ip"), "security.max_connections_per_ip", sec.MaxConnectionsPerIP, 0, guard.MaxConnectionsPerIP)
	dg := sec.DDoSGuard
	v.intIn(v.at("security", "ddos_guard", "failure_threshold"), "security.ddos_guard.failure_threshold", dg.FailureThreshold, 0, guard.MaxFailureThreshold)
	v.durIn(v.at("security", "ddos_guard", "window"), "security.ddos_guard.window", dg.Window, 0, guard.MaxWindow)
	v.durIn(v.at("security", "ddos_guard", "ban_duration"), "security.ddos_guard.ban_duration", dg.BanDuration, 0, guard.MaxBanDuration)
	v.durIn(v.at("security", "ddos_guard", "max_ban_duration"), "security.ddos_guard.max_ban_duration", dg.MaxBanDuration, 0, guard.MaxBanDuration)
	if len(v.errs) == 0 {
		// What the guard itself refuses (combinations of values).
		if err := sec.Guard().Validate(); err != nil {
			v.add(v.at("security"), "security: %v", err)
		}
	}
}

func (v *checker) monitoring(m *Monitoring) {
	for _, port := range []struct {
		key string
		v   int
	}{{"metrics_port", m.MetricsPort}, {"health_check_port", m.HealthCheckPort}} {
		if port.v < 0 || port.v > 65535 {
			v.add(v.at("monitoring", port.key), "monitoring.%s: %d is not a port (0 disables)", port.key, port.v)
		}
	}
	if m.BindAddress != "" && !validHost(m.BindAddress) {
		v.add(v.at("monitoring", "bind_address"), "monitoring.bind_address: %q is neither an IP address nor a host name", m.BindAddress)
	}
	switch {
	case m.AdminTokenFile != "" && (len(m.AdminTokenFile) > maxStringLen || !filepath.IsAbs(m.AdminTokenFile) || !printable(m.AdminTokenFile)):
		v.add(v.at("monitoring", "admin_token_file"), "monitoring.admin_token_file: %q: an absolute path of at most %d printable characters", m.AdminTokenFile, maxStringLen)
	case m.AdminTokenFile != "" && !m.Admin:
		v.add(v.at("monitoring", "admin_token_file"), "monitoring.admin_token_file: set while monitoring.admin is false: write admin: true to enable the actions, or remove the file name")
	}
	if m.Admin && m.MetricsPort == 0 {
		v.add(v.at("monitoring", "admin"), "monitoring.admin: true, but monitoring.metrics_port is 0: the actions are served on the metrics port")
	}
}

func (v *checker) distributed(d *Distributed) {
	if len(d.NodeID) > maxConditionLen || !printable(d.NodeID) {
		v.add(v.at("distributed", "node_id"), "distributed.node_id: at most %d printable characters", maxConditionLen)
	}
	if len(d.EtcdEndpoints) > maxEtcdEndpoints {
		v.add(v.at("distributed", "etcd_endpoints"), "distributed.etcd_endpoints: %d entries, at most %d", len(d.EtcdEndpoints), maxEtcdEndpoints)
	}
	for i, e := range d.EtcdEndpoints {
		where := v.at("distributed", "etcd_endpoints", fmt.Sprintf("#%d", i))
		if e == "" || len(e) > maxStringLen || !printable(e) {
			v.add(where, "distributed.etcd_endpoints[%d]: want host:port or a URL", i)
		} else if err := checkEndpoint(e); err != nil {
			v.add(where, "distributed.etcd_endpoints[%d]: %v", i, err)
		}
	}
	v.intIn(v.at("distributed", "service_discovery", "refresh_interval"), "distributed.service_discovery.refresh_interval", d.ServiceDiscovery.RefreshInterval, 0, maxIntervalSeconds)
	v.intIn(v.at("distributed", "load_balancer", "health_check_interval"), "distributed.load_balancer.health_check_interval", d.LoadBalancer.HealthCheckInterval, 0, maxIntervalSeconds)
	if !upstream.ValidStrategy(d.LoadBalancer.Strategy) {
		v.add(v.at("distributed", "load_balancer", "strategy"), "distributed.load_balancer.strategy %q: want %s", d.LoadBalancer.Strategy, strategies)
	}
	if p := d.ConfigManager.WatchPrefix; len(p) > maxStringLen || !printable(p) {
		v.add(v.at("distributed", "config_manager", "watch_prefix"), "distributed.config_manager.watch_prefix: at most %d printable characters", maxStringLen)
	}
	if d.LeaseTTL != 0 {
		v.durIn(v.at("distributed", "lease_ttl"), "distributed.lease_ttl", d.LeaseTTL, minLeaseTTL, maxLeaseTTL)
	}
	if d.StartTimeout != 0 {
		v.durIn(v.at("distributed", "start_timeout"), "distributed.start_timeout", d.StartTimeout, minStartTimeout, maxStartTimeout)
	}
	if d.MaxStaleness != 0 {
		v.durIn(v.at("distributed", "max_staleness"), "distributed.max_staleness", d.MaxStaleness, minLeaseTTL, maxStaleness)
	}
	if p := d.StateFile; len(p) > maxStringLen || !printable(p) {
		v.add(v.at("distributed", "state_file"), "distributed.state_file: at most %d printable characters", maxStringLen)
	}
}

const strategies = "round_robin, weighted_round_robin, least_connections, random or first"

// ParsePrefix accepts a CIDR or a single address.
func ParsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither an IP address nor a CIDR", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// validHost reports whether h is an IP address or a host name (letters,
// digits, '-', '_' and dots; labels of 1 to 63, at most 253 in all).
func validHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// checkHostPort checks "host:port" with a numeric port in [minPort, 65535];
// an empty host is allowed when emptyHost (listen on every interface).
func checkHostPort(addr string, minPort int, emptyHost bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: want host:port", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < minPort || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number in %d..65535", addr, port, minPort)
	}
	if host == "" && emptyHost {
		return nil
	}
	if !validHost(host) {
		return fmt.Errorf("%q: host %q is neither an IP address nor a host name", addr, host)
	}
	return nil
}

// printable reports whether s has no control characters (it ends up in
// logs, metric labels and probe requests).
func printable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// Prefixes is a list of networks (trusted_proxies).
type Prefixes []netip.Prefix

// ParsePrefixes parses entries as ParsePrefix does.
func ParsePrefixes(entries []string) (Prefixes, error) {
	var out Prefixes
	for _, e := range entries {
		p, err := ParsePrefix(e)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Contains reports whether ip is in one of the networks.
func (ps Prefixes) Contains(ip netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
