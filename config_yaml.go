package protoplex

import (
	"bytes"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"regexp"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/darkit/protoplex/internal/upstream"
	"github.com/darkit/protoplex/protocols"
)

// StringList is a YAML value that may be written as one string or a list.
type StringList []string

// UnmarshalYAML accepts `x` and `[x, y]`.
func (l *StringList) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*l = StringList{n.Value}
		return nil
	case yaml.SequenceNode:
		var s []string
		if err := n.Decode(&s); err != nil {
			return err
		}
		*l = s
		return nil
	}
	return fmt.Errorf("line %d: want a string or a list of strings", n.Line)
}

//go:embed defaultconfig.yaml
var defaultConfigYAML []byte

// DefaultConfigYAML returns the embedded default configuration.
func DefaultConfigYAML() []byte { return bytes.Clone(defaultConfigYAML) }

// DefaultConfig is the configuration used without -config: listen
// 127.0.0.1:9090, metrics 127.0.0.1:9091, health 127.0.0.1:9092, SSH/HTTP/TLS/Redis to their local ports.
func DefaultConfig() *Config {
	c, err := ParseConfig(defaultConfigYAML, "defaultconfig.yaml")
	if err != nil {
		panic("protoplex: embedded default config: " + err.Error()) // a build defect, caught by tests
	}
	return c
}

// LoadConfig reads and validates the YAML file at path. A file over 4 MiB
// is refused before it is parsed.
func LoadConfig(path string) (*Config, error) {
	data, err := readConfigFile(path)
	if err != nil {
		return nil, err
	}
	c, err := ParseConfig(data, path)
	if err != nil {
		return nil, err
	}
	c.Source = path
	return c, nil
}

// readConfigFile reads at most maxConfigSize bytes of path: a file that is
// larger (a wrong path, a log file) is never held in memory whole. Only a
// regular file (or a symlink to one, as in a Kubernetes ConfigMap) is read:
// opening a FIFO would block until a writer comes, a device may never end.
func readConfigFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("protoplex: %w", err)
	}
	if err := regularFile(path, st); err != nil {
		return nil, err
	}
	// Opened without blocking and checked again: the file may have been
	// replaced since the Stat.
	f, err := openConfig(path)
	if err != nil {
		return nil, fmt.Errorf("protoplex: %w", err)
	}
	defer f.Close()
	if st, err = f.Stat(); err != nil {
		return nil, fmt.Errorf("protoplex: %w", err)
	}
	if err := regularFile(path, st); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("protoplex: %w", err)
	}
	if len(data) > maxConfigSize {
		return nil, tooLarge(path)
	}
	return data, nil
}

// regularFile refuses anything but a regular file, naming what it is.
func regularFile(path string, st os.FileInfo) error {
	m := st.Mode()
	if m.IsRegular() {
		return nil
	}
	what := "mode " + m.String()
	switch {
	case m&os.ModeNamedPipe != 0:
		what = "a FIFO"
	case m.IsDir():
		what = "a directory"
	case m&os.ModeSocket != 0:
		what = "a socket"
	case m&os.ModeDevice != 0:
		what = "a device"
	}
	return fmt.Errorf("%s: not a regular file (%s): refused", path, what)
}

func tooLarge(name string) error {
	return fmt.Errorf("%s: larger than %d bytes (4 MiB), the limit of a configuration; refused before parsing", name, maxConfigSize)
}

// CheckConfigFile validates the file at path (protoplex -check).
func CheckConfigFile(path string) error {
	_, err := LoadConfig(path)
	return err
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): `)

// ParseConfig decodes, defaults and validates YAML. Every error names
// filename:line and what is wrong; all errors are reported, not the first.
func ParseConfig(data []byte, filename string) (*Config, error) {
	if len(data) > maxConfigSize {
		return nil, tooLarge(filename)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlError(filename, err)
	}
	c := &Config{}
	if len(root.Content) > 0 {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(c); err != nil {
			return nil, yamlError(filename, err)
		}
		if doc := root.Content[0]; doc.Kind == yaml.MappingNode {
			if p := mapValue(doc, "protocols"); p != nil && p.Kind == yaml.SequenceNode {
				for i, item := range p.Content {
					if i < len(c.Protocols) {
						c.Protocols[i].Line = item.Line
					}
				}
			}
		}
	}
	c.applyDefaults()
	if env := os.Getenv("PROTOPLEX_NODE_ID"); env != "" {
		c.Distributed.NodeID = env
	}
	if env := os.Getenv("ETCD_ENDPOINTS"); env != "" {
		c.Distributed.EtcdEndpoints = strings.Split(env, ",")
	}
	c.Source = filename
	if err := c.validate(filename, &root); err != nil {
		return nil, err
	}
	return c, nil
}

// yamlError rewrites yaml.v3's "line N: msg" into "file:N: msg".
func yamlError(filename string, err error) error {
	var te *yaml.TypeError
	var msgs []string
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	var errs []error
	for _, m := range msgs {
		if sub := yamlLine.FindStringSubmatch(m); sub != nil {
			m = filename + ":" + sub[1] + ": " + m[len(sub[0]):]
		} else {
			m = filename + ": " + m
		}
		errs = append(errs, errors.New(m))
	}
	return errors.Join(errs...)
}

func mapValue(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// lineOf returns the line of the value at path (keys, or "#i" for list
// items) in root, or the deepest line found.
func lineOf(root *yaml.Node, path ...string) int {
	if root == nil || len(root.Content) == 0 {
		return 0
	}
	n := root.Content[0]
	line := n.Line
	for _, k := range path {
		var next *yaml.Node
		if strings.HasPrefix(k, "#") {
			i, _ := strconv.Atoi(k[1:])
			if n.Kind == yaml.SequenceNode && i < len(n.Content) {
				next = n.Content[i]
			}
		} else if n.Kind == yaml.MappingNode {
			next = mapValue(n, k)
		}
		if next == nil {
			return line
		}
		n, line = next, next.Line
	}
	return line
}

func (c *Config) applyDefaults() {
	s := &c.Server
	if len(s.Listen) == 0 {
		s.Listen = StringList{defaultFallbackListen}
	}
	if c.Monitoring.BindAddress == "" {
		c.Monitoring.BindAddress = defaultMonitoringBind
	}
	if s.MaxConnections == 0 {
		s.MaxConnections = DefaultMaxConnections
	}
	if s.BufferSize == 0 {
		s.BufferSize = DefaultBufferSize
	}
	if s.IdentifyTimeout == 0 {
		s.IdentifyTimeout = DefaultIdentifyTimeout
	}
	if s.IdentifyMinBytes == 0 {
		s.IdentifyMinBytes = min(DefaultIdentifyMinBytes, s.BufferSize)
	}
	if s.CacheTTL == 0 {
		s.CacheTTL = DefaultCacheTTL
	}
	if s.DialTimeout == 0 {
		s.DialTimeout = DefaultDialTimeout
	}
	if s.GracefulShutdownTimeout == 0 {
		s.GracefulShutdownTimeout = DefaultGracefulShutdownTimeout
	}
	if s.ServerFirstWait == 0 {
		s.ServerFirstWait = DefaultServerFirstWait
	}
}

// Validate checks a configuration built in Go (no line numbers).
func (c *Config) Validate() error { return c.validate(c.Source, nil) }

// Bounds of the values outside server: (whose bounds are in options.go),
// listed in docs/config.md. Each keeps a config value from costing memory,
// goroutines or CPU without limit; the guard checks its own as well.
const (
	maxConfigSize         = 4 << 20
	maxListen             = 64
	maxTrustedProxies     = 1024
	maxProtocols          = 1024
	maxTargets            = upstream.MaxTargets // per protocol
	maxConditions         = 10_000
	maxConditionLen       = 253 // a DNS name
	maxNameLen            = 64
	maxPriority           = 1_000_000
	maxMatchPatterns      = 64
	maxMatchStartBytes    = 1024
	maxRegexLen           = 4096
	maxRegexInsts         = 2_000  // compiled instructions of one regex
	maxTotalRegexInsts    = 20_000 // of all match_regexes together
	maxTotalTargets       = 4096   // all protocols together
	maxPoolConns          = 1024   // Σ targets × pool.min_idle, and at most max_connections
	maxProbeRate          = 1000   // Σ targets / health_check.interval, probes per second
	maxPoolMinIdle        = 1000   // per target
	maxPoolIdleTime       = 24 * time.Hour
	minHealthInterval     = 100 * time.Millisecond
	maxHealthInterval     = 24 * time.Hour
	maxHealthTimeout      = time.Minute
	maxRiseFall           = 100
	maxHealthPathLen      = 1024
	maxRateLimit          = 1e9
	maxBurstSize          = 1_000_000_000
	maxConnectionsPerIP   = 1_000_000
	maxFailureThreshold   = 1_000_000
	maxDDoSWindow         = 24 * time.Hour
	maxBanDuration        = 30 * 24 * time.Hour
	maxEtcdEndpoints      = 64
	maxStringLen          = 1024
	maxIntervalSeconds    = 86400
	minLeaseTTL           = time.Second
	maxLeaseTTL           = time.Hour
	defaultMonitoringBind = "127.0.0.1"
	defaultFallbackListen = ":9090"
	errNoProtocolsExplain = "no protocols: every connection would be refused (an empty or truncated file?); list at least one"
)

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

func (c *Config) validate(file string, root *yaml.Node) error {
	var errs []error
	at := func(path ...string) string {
		if l := lineOf(root, path...); l > 0 {
			return fmt.Sprintf("%s:%d: ", file, l)
		}
		if file != "" {
			return file + ": "
		}
		return ""
	}
	add := func(where string, format string, a ...any) { errs = append(errs, fmt.Errorf(where+format, a...)) }
	intIn := func(where, key string, v, lo, hi int) {
		if v < lo || v > hi {
			add(where, "%s: %d is outside [%d, %d]", key, v, lo, hi)
		}
	}
	durIn := func(where, key string, v, lo, hi time.Duration) {
		if v < lo || v > hi {
			add(where, "%s: %v is outside [%v, %v]", key, v, lo, hi)
		}
	}
	s := c.Server
	if len(s.Listen) > maxListen {
		add(at("server", "listen"), "server.listen: %d addresses, at most %d", len(s.Listen), maxListen)
	}
	for i, l := range s.Listen {
		if err := checkHostPort(l, 0, true); err != nil {
			add(at("server", "listen"), "server.listen[%d]: %v", i, err)
		}
		// The second bind of an address would fail, and rebinds key
		// listeners by address.
		if j := slices.Index(s.Listen, l); j < i {
			add(at("server", "listen"), "server.listen[%d]: %q is listed twice", i, l)
		}
	}
	// The server: values share their bounds with the Go options.
	o := defaultOptions()
	for _, opt := range c.options() {
		opt(&o)
	}
	for _, b := range o.bounded() {
		if b.key == "identify_min_bytes" {
			if s.IdentifyMinBytes <= 0 || s.IdentifyMinBytes > s.BufferSize {
				add(at("server", b.key), "server.identify_min_bytes: must be > 0 and <= buffer_size (%d), got %d", s.BufferSize, s.IdentifyMinBytes)
			}
			continue
		}
		if b.v < 0 && b.duration {
			add(at("server", b.key), "server.%s: must not be negative", b.key)
		} else if err := b.check(); err != nil {
			add(at("server", b.key), "server.%s: %v", b.key, err)
		}
	}
	if f := strings.ToLower(s.LogFormat); f != "" && f != "text" && f != "json" {
		add(at("server", "log_format"), "server.log_format: %q: want text or json", s.LogFormat)
	}
	if s.LogLevel != "" {
		var level slog.Level
		if err := level.UnmarshalText([]byte(s.LogLevel)); err != nil {
			add(at("server", "log_level"), "server.log_level: %q: want debug, info, warn or error", s.LogLevel)
		}
	}
	if len(s.TrustedProxies) > maxTrustedProxies {
		add(at("server", "trusted_proxies"), "server.trusted_proxies: %d entries, at most %d", len(s.TrustedProxies), maxTrustedProxies)
	}
	for i, p := range s.TrustedProxies {
		if _, err := parsePrefix(p); err != nil {
			add(at("server", "trusted_proxies", fmt.Sprintf("#%d", i)), "server.trusted_proxies[%d]: %v", i, err)
		}
	}

	sec := c.Security
	for _, list := range []struct {
		key   string
		items []string
	}{{"ip_whitelist", sec.IPWhitelist}, {"ip_blacklist", sec.IPBlacklist}} {
		for i, e := range list.items {
			if _, err := parsePrefix(e); err != nil {
				add(at("security", list.key, fmt.Sprintf("#%d", i)), "security.%s[%d]: %v", list.key, i, err)
			}
		}
	}
	rl := sec.RateLimit
	if r := rl.RequestsPerSecond; math.IsNaN(r) || r < 0 || r > maxRateLimit || (sec.EnableRateLimit && r == 0) {
		add(at("security", "rate_limit", "requests_per_second"), "security.rate_limit.requests_per_second: %v is outside (0, %g]", r, float64(maxRateLimit))
	}
	intIn(at("security", "rate_limit", "burst_size"), "security.rate_limit.burst_size", rl.BurstSize, 0, maxBurstSize)
	intIn(at("security", "max_connections_per_ip"), "security.max_connections_per_ip", sec.MaxConnectionsPerIP, 0, maxConnectionsPerIP)
	dg := sec.DDoSGuard
	intIn(at("security", "ddos_guard", "failure_threshold"), "security.ddos_guard.failure_threshold", dg.FailureThreshold, 0, maxFailureThreshold)
	durIn(at("security", "ddos_guard", "window"), "security.ddos_guard.window", dg.Window, 0, maxDDoSWindow)
	durIn(at("security", "ddos_guard", "ban_duration"), "security.ddos_guard.ban_duration", dg.BanDuration, 0, maxBanDuration)
	durIn(at("security", "ddos_guard", "max_ban_duration"), "security.ddos_guard.max_ban_duration", dg.MaxBanDuration, 0, maxBanDuration)
	if len(errs) == 0 {
		// What the guard itself refuses, for a Go-built Config.
		if err := c.securityConfig().Validate(); err != nil {
			add(at("security"), "security: %v", err)
		}
	}

	m := c.Monitoring
	for _, port := range []struct {
		key string
		v   int
	}{{"metrics_port", m.MetricsPort}, {"health_check_port", m.HealthCheckPort}} {
		if port.v < 0 || port.v > 65535 {
			add(at("monitoring", port.key), "monitoring.%s: %d is not a port (0 disables)", port.key, port.v)
		}
	}
	if m.BindAddress != "" && !validHost(m.BindAddress) {
		add(at("monitoring", "bind_address"), "monitoring.bind_address: %q is neither an IP address nor a host name", m.BindAddress)
	}

	d := c.Distributed
	if len(d.NodeID) > maxConditionLen || !printable(d.NodeID) {
		add(at("distributed", "node_id"), "distributed.node_id: at most %d printable characters", maxConditionLen)
	}
	if len(d.EtcdEndpoints) > maxEtcdEndpoints {
		add(at("distributed", "etcd_endpoints"), "distributed.etcd_endpoints: %d entries, at most %d", len(d.EtcdEndpoints), maxEtcdEndpoints)
	}
	for i, e := range d.EtcdEndpoints {
		if e == "" || len(e) > maxStringLen || !printable(e) {
			add(at("distributed", "etcd_endpoints", fmt.Sprintf("#%d", i)), "distributed.etcd_endpoints[%d]: want host:port or a URL", i)
		}
	}
	intIn(at("distributed", "service_discovery", "refresh_interval"), "distributed.service_discovery.refresh_interval", d.ServiceDiscovery.RefreshInterval, 0, maxIntervalSeconds)
	intIn(at("distributed", "load_balancer", "health_check_interval"), "distributed.load_balancer.health_check_interval", d.LoadBalancer.HealthCheckInterval, 0, maxIntervalSeconds)
	if !upstream.ValidStrategy(d.LoadBalancer.Strategy) {
		add(at("distributed", "load_balancer", "strategy"), "distributed.load_balancer.strategy %q: want round_robin, weighted_round_robin, least_connections, random or first", d.LoadBalancer.Strategy)
	}
	if p := d.ConfigManager.WatchPrefix; len(p) > maxStringLen || !printable(p) {
		add(at("distributed", "config_manager", "watch_prefix"), "distributed.config_manager.watch_prefix: at most %d printable characters", maxStringLen)
	}
	if d.LeaseTTL != 0 {
		durIn(at("distributed", "lease_ttl"), "distributed.lease_ttl", d.LeaseTTL, minLeaseTTL, maxLeaseTTL)
	}

	if len(c.Protocols) == 0 {
		where := at("protocols")
		if lineOf(root, "protocols") == 0 && file != "" {
			where = file + ":1: "
		}
		add(where, errNoProtocolsExplain)
	}
	if len(c.Protocols) > maxProtocols {
		add(at("protocols"), "protocols: %d entries, at most %d", len(c.Protocols), maxProtocols)
	}
	fallbacks := 0
	seen := map[string]int{}
	// Totals over all protocols: each bound reported once, at the protocol
	// whose share goes over it.
	var totalTargets, poolConns, regexInsts int
	var probeRate float64
	poolLimit := min(maxPoolConns, s.MaxConnections)
	for i, p := range c.Protocols {
		where := at("protocols", fmt.Sprintf("#%d", i))
		if p.Line > 0 && root == nil {
			where = fmt.Sprintf("%s:%d: ", file, p.Line)
		}
		field := func(key ...string) string { return at(append([]string{"protocols", fmt.Sprintf("#%d", i)}, key...)...) }
		name := fmt.Sprintf("protocols[%d] (%s)", i, p.Name)
		_, builtin := protocols.Lookup(p.Name)
		switch {
		case p.Name == "":
			add(where, "protocols[%d]: name is required", i)
		case len(p.Name) > maxNameLen || !printable(p.Name):
			add(field("name"), "protocols[%d]: name: at most %d printable characters", i, maxNameLen)
		case !builtin && len(p.MatchStartBytes) == 0 && len(p.MatchRegexes) == 0:
			add(where, "%s: %q is not a built-in protocol (%s); a user protocol needs match_start_bytes or match_regexes", name, p.Name, strings.Join(slices.Sorted(slices.Values(protocols.Names())), ", "))
		}
		if len(p.Target) == 0 {
			add(where, "%s: target is required", name)
		}
		targets := 0
		for _, t := range p.Target {
			ts, err := upstream.ParseTargets([]string{t})
			if err != nil {
				add(field("target"), "%s: %v", name, err)
				continue
			}
			targets += len(ts)
			for _, tg := range ts {
				if err := checkHostPort(tg.Addr, 1, false); err != nil {
					add(field("target"), "%s: target %v", name, err)
				}
			}
		}
		if targets > maxTargets {
			add(field("target"), "%s: %d targets, at most %d", name, targets, maxTargets)
		}
		if before := totalTargets; before <= maxTotalTargets {
			if totalTargets += targets; totalTargets > maxTotalTargets {
				add(field("target"), "%s: %d targets in protocols[0..%d], at most %d in all protocols", name, totalTargets, i, maxTotalTargets)
			}
		}
		intIn(field("priority"), name+": priority", p.Priority, -maxPriority, maxPriority)
		for _, cond := range []struct {
			key  string
			list []string
			max  int
		}{{"sni", p.SNI, maxConditionLen}, {"alpn", p.ALPN, 255}, {"host", p.Host, maxConditionLen}} {
			if len(cond.list) > maxConditions {
				add(field(cond.key), "%s: %s: %d entries, at most %d", name, cond.key, len(cond.list), maxConditions)
			}
			for _, v := range cond.list {
				if v == "" || len(v) > cond.max || !printable(v) {
					add(field(cond.key), "%s: %s %q: want 1 to %d printable characters", name, cond.key, v, cond.max)
					break
				}
			}
		}
		if len(p.MatchStartBytes) > maxMatchPatterns {
			add(field("match_start_bytes"), "%s: match_start_bytes: %d entries, at most %d", name, len(p.MatchStartBytes), maxMatchPatterns)
		}
		for _, h := range p.MatchStartBytes {
			if b, err := hex.DecodeString(strings.ReplaceAll(h, " ", "")); err != nil || len(b) == 0 {
				add(field("match_start_bytes"), "%s: match_start_bytes %q: not hex", name, h)
			} else if len(b) > maxMatchStartBytes {
				add(field("match_start_bytes"), "%s: match_start_bytes: %d bytes, at most %d", name, len(b), maxMatchStartBytes)
			}
		}
		if len(p.MatchRegexes) > maxMatchPatterns {
			add(field("match_regexes"), "%s: match_regexes: %d entries, at most %d", name, len(p.MatchRegexes), maxMatchPatterns)
		}
		for j, r := range p.MatchRegexes {
			where := field("match_regexes", fmt.Sprintf("#%d", j))
			if len(r) > maxRegexLen {
				add(where, "%s: match_regexes[%d]: %d characters, at most %d", name, j, len(r), maxRegexLen)
				continue
			}
			n, exact, err := regexSize(r)
			switch {
			case err != nil:
				add(where, "%s: match_regexes %q: %v", name, r, err)
			case n > maxRegexInsts:
				more := ""
				if !exact {
					more = "about "
				}
				add(where, "%s: match_regexes[%d]: compiles to %s%d instructions, at most %d: simplify the pattern (counted repetitions like {1000} expand)", name, j, more, n, maxRegexInsts)
			case regexInsts <= maxTotalRegexInsts:
				if regexInsts += n; regexInsts > maxTotalRegexInsts {
					add(where, "%s: match_regexes[%d]: the regexes of protocols[0..%d] compile to %d instructions, at most %d in all: simplify the patterns (counted repetitions like {1000} expand)", name, j, i, regexInsts, maxTotalRegexInsts)
				}
			}
		}
		lower := strings.ToLower(p.Name)
		if (len(p.SNI) > 0 || len(p.ALPN) > 0) && lower != "tls" {
			add(where, "%s: sni/alpn apply to TLS only", name)
		}
		if len(p.Host) > 0 && lower != "http" && lower != "websocket" && lower != "webdav" {
			add(field("host"), "%s: host applies to HTTP, WebSocket and WebDAV only", name)
		}
		if !upstream.ValidStrategy(p.Balance) {
			add(field("balance"), "%s: balance %q: want round_robin, weighted_round_robin, least_connections, random or first", name, p.Balance)
		}
		if p.SendProxy != "" && p.SendProxy != "v1" && p.SendProxy != "v2" {
			add(field("send_proxy"), "%s: send_proxy %q: want v1 or v2", name, p.SendProxy)
		}
		intIn(field("pool", "min_idle"), name+": pool.min_idle", p.Pool.MinIdle, 0, maxPoolMinIdle)
		if p.Pool.MinIdle > 0 && p.Pool.MinIdle <= maxPoolMinIdle && poolConns <= poolLimit {
			// Each pooled connection holds an fd for as long as the config.
			if poolConns += targets * p.Pool.MinIdle; poolConns > poolLimit {
				add(field("pool", "min_idle"), "%s: pool.min_idle: protocols[0..%d] keep %d warm connections (targets × min_idle), at most %d in all (the smaller of %d and max_connections)", name, i, poolConns, poolLimit, maxPoolConns)
			}
		}
		durIn(field("pool", "max_idle_time"), name+": pool.max_idle_time", p.Pool.MaxIdleTime, 0, maxPoolIdleTime)
		h := p.HealthCheck
		if h.Interval != 0 {
			durIn(field("health_check", "interval"), name+": health_check.interval", h.Interval, minHealthInterval, maxHealthInterval)
		}
		durIn(field("health_check", "timeout"), name+": health_check.timeout", h.Timeout, 0, maxHealthTimeout)
		interval := h.Interval
		if interval == 0 && c.Distributed.Enable && d.LoadBalancer.HealthCheckInterval > 0 {
			interval = time.Duration(d.LoadBalancer.HealthCheckInterval) * time.Second // the cluster's default
		}
		if interval >= minHealthInterval && probeRate <= maxProbeRate {
			if probeRate += float64(targets) * float64(time.Second) / float64(interval); probeRate > maxProbeRate {
				add(field("health_check", "interval"), "%s: health_check: protocols[0..%d] probe %.0f targets per second (targets / interval), at most %d in all", name, i, probeRate, maxProbeRate)
			}
		}
		intIn(field("health_check", "rise"), name+": health_check.rise", h.Rise, 0, maxRiseFall)
		intIn(field("health_check", "fall"), name+": health_check.fall", h.Fall, 0, maxRiseFall)
		switch h.Check {
		case "", "tcp", "redis", "http":
		default:
			add(field("health_check", "check"), "%s: health_check.check %q: want tcp, redis or http", name, h.Check)
		}
		if h.Path != "" && (h.Path[0] != '/' || len(h.Path) > maxHealthPathLen || strings.ContainsFunc(h.Path, func(r rune) bool { return r <= ' ' || r == 0x7f })) {
			add(field("health_check", "path"), "%s: health_check.path %q: want /path, at most %d characters, no spaces or control characters", name, h.Path, maxHealthPathLen)
		}
		durIn(field("idle_timeout"), name+": idle_timeout", p.IdleTimeout, 0, maxIdleTimeout)
		if _, err := upstream.ParseSource(p.Source); err != nil {
			add(field("source"), "%s: %v", name, err)
		}
		if p.Fallback {
			fallbacks++
			if fallbacks == 2 {
				add(field("fallback"), "%s: a second fallback; only one protocol may be the fallback", name)
			}
		}
		key := fmt.Sprintf("%s|%v|%v|%v", lower, p.SNI, p.ALPN, p.Host)
		if j, dup := seen[key]; dup && builtin {
			add(where, "%s: same protocol and conditions as protocols[%d]: the second could never match", name, j)
		}
		seen[key] = i
	}
	return errors.Join(errs...)
}

// regexSize returns the number of instructions pattern compiles to, as
// regexp.Compile would (Perl flags, simplified). A pattern whose size,
// estimated from the parse tree, is far over maxRegexInsts is not
// compiled: its counted repetitions would be expanded in memory just to be
// refused; that estimate is returned with exact false.
func regexSize(pattern string) (n int, exact bool, err error) {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return 0, false, err
	}
	if est := regexEstimate(re); est > 4*maxRegexInsts {
		return int(est), false, nil
	}
	prog, err := syntax.Compile(re.Simplify())
	if err != nil {
		return 0, false, err
	}
	return len(prog.Inst), true, nil
}

// regexEstimate is the size regexp/syntax's parser estimates for re (an
// upper bound of the compiled program, counted repetitions multiplied out),
// saturating instead of overflowing.
func regexEstimate(re *syntax.Regexp) int64 {
	const most = 1 << 40
	var size int64
	switch re.Op {
	case syntax.OpLiteral:
		size = int64(len(re.Rune))
	case syntax.OpCapture, syntax.OpStar:
		size = 2 + regexEstimate(re.Sub[0])
	case syntax.OpPlus, syntax.OpQuest:
		size = 1 + regexEstimate(re.Sub[0])
	case syntax.OpConcat, syntax.OpAlternate:
		for _, sub := range re.Sub {
			size = min(most, size+regexEstimate(sub))
		}
		if re.Op == syntax.OpAlternate && len(re.Sub) > 1 {
			size += int64(len(re.Sub)) - 1
		}
	case syntax.OpRepeat:
		sub := regexEstimate(re.Sub[0])
		times := int64(re.Max)
		if re.Max == -1 {
			times = int64(re.Min) + 1
		}
		if times > 0 && sub > most/times {
			return most
		}
		size = times*sub + int64(max(re.Max-re.Min, 0))
	}
	return min(most, max(1, size))
}

// BuildProtocols turns the protocols: entries into *protocols.Protocol in
// file order.
func (c *Config) BuildProtocols() ([]*protocols.Protocol, error) {
	var out []*protocols.Protocol
	for i, pc := range c.Protocols {
		target := strings.Join(pc.Target, ",")
		var p *protocols.Protocol
		if ctor, ok := protocols.Lookup(pc.Name); ok && len(pc.MatchStartBytes) == 0 && len(pc.MatchRegexes) == 0 {
			p = ctor(target)
		} else {
			p = &protocols.Protocol{Name: pc.Name, Target: target}
			for _, h := range pc.MatchStartBytes {
				b, err := hex.DecodeString(strings.ReplaceAll(h, " ", ""))
				if err != nil {
					return nil, fmt.Errorf("%s:%d: protocols[%d]: match_start_bytes %q: not hex", c.Source, pc.Line, i, h)
				}
				p.MatchStartBytes = append(p.MatchStartBytes, b)
				p.FirstBytes = append(p.FirstBytes, b[0])
			}
			if len(pc.MatchRegexes) > 0 {
				p.FirstBytes = nil // a regex may start with anything
			}
			for _, r := range pc.MatchRegexes {
				re, err := regexp.Compile(r)
				if err != nil {
					return nil, fmt.Errorf("%s:%d: protocols[%d]: %v", c.Source, pc.Line, i, err)
				}
				p.MatchRegexes = append(p.MatchRegexes, re)
			}
			if pc.ServerFirst {
				p.EstablishConnection = []protocols.EstablishConnection{{}}
			}
		}
		p.Priority = pc.Priority
		p.SNI, p.ALPN, p.Hosts = pc.SNI, pc.ALPN, pc.Host
		p.Fallback = pc.Fallback
		p.Balance, p.SendProxy = pc.Balance, pc.SendProxy
		p.Pool = protocols.PoolConfig{MinIdle: pc.Pool.MinIdle, MaxIdleTime: pc.Pool.MaxIdleTime}
		h := pc.HealthCheck
		p.Health = protocols.HealthConfig{Interval: h.Interval, Timeout: h.Timeout, Rise: h.Rise, Fall: h.Fall, Check: h.Check, Path: h.Path}
		p.IdleTimeout = pc.IdleTimeout
		p.Source = slices.Clone([]string(pc.Source))
		out = append(out, p)
	}
	return out, nil
}
