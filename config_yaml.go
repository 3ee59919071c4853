package protoplex

import (
	"bytes"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

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

// DefaultConfig is the configuration used without -config: listen :9090,
// metrics :9091, health :9092, SSH/HTTP/TLS/Redis to their local ports.
func DefaultConfig() *Config {
	c, err := ParseConfig(defaultConfigYAML, "defaultconfig.yaml")
	if err != nil {
		panic("protoplex: embedded default config: " + err.Error()) // a build defect, caught by tests
	}
	return c
}

// LoadConfig reads and validates the YAML file at path.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("protoplex: %w", err)
	}
	c, err := ParseConfig(data, path)
	if err != nil {
		return nil, err
	}
	c.Source = path
	return c, nil
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
		s.Listen = StringList{":9090"}
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
	s := c.Server
	for i, l := range s.Listen {
		if _, _, err := net.SplitHostPort(l); err != nil {
			add(at("server", "listen"), "server.listen[%d]: %q: want host:port or :port", i, l)
		}
	}
	if s.MaxConnections < 0 {
		add(at("server", "max_connections"), "server.max_connections: must be > 0, got %d", s.MaxConnections)
	}
	if s.BufferSize < 0 {
		add(at("server", "buffer_size"), "server.buffer_size: must be > 0, got %d", s.BufferSize)
	}
	if s.IdentifyMinBytes <= 0 || s.IdentifyMinBytes > s.BufferSize {
		add(at("server", "identify_min_bytes"), "server.identify_min_bytes: must be > 0 and <= buffer_size (%d), got %d", s.BufferSize, s.IdentifyMinBytes)
	}
	for _, d := range []struct {
		key string
		v   int64
	}{{"identify_timeout", int64(s.IdentifyTimeout)}, {"cache_ttl", int64(s.CacheTTL)}, {"dial_timeout", int64(s.DialTimeout)},
		{"graceful_shutdown_timeout", int64(s.GracefulShutdownTimeout)}, {"server_first_wait", int64(s.ServerFirstWait)}, {"idle_timeout", int64(s.IdleTimeout)},
		{"identify_read_timeout", int64(s.IdentifyReadTimeout)}, {"tcp_keepalive", int64(s.TCPKeepAlive)}} {
		if d.v < 0 {
			add(at("server", d.key), "server.%s: must not be negative", d.key)
		}
	}
	if f := strings.ToLower(s.LogFormat); f != "" && f != "text" && f != "json" {
		add(at("server", "log_format"), "server.log_format: %q: want text or json", s.LogFormat)
	}
	for i, p := range s.TrustedProxies {
		if _, err := parsePrefix(p); err != nil {
			add(at("server", "trusted_proxies", fmt.Sprintf("#%d", i)), "server.trusted_proxies[%d]: %v", i, err)
		}
	}
	for _, list := range []struct {
		key   string
		items []string
	}{{"ip_whitelist", c.Security.IPWhitelist}, {"ip_blacklist", c.Security.IPBlacklist}} {
		for i, e := range list.items {
			if _, err := parsePrefix(e); err != nil {
				add(at("security", list.key, fmt.Sprintf("#%d", i)), "security.%s[%d]: %v", list.key, i, err)
			}
		}
	}
	if rl := c.Security.RateLimit; c.Security.EnableRateLimit && (rl.RequestsPerSecond <= 0 || rl.BurstSize < 0) {
		add(at("security", "rate_limit"), "security.rate_limit: requests_per_second must be > 0 and burst_size >= 0")
	}
	for _, port := range []struct {
		key string
		v   int
	}{{"metrics_port", c.Monitoring.MetricsPort}, {"health_check_port", c.Monitoring.HealthCheckPort}} {
		if port.v < 0 || port.v > 65535 {
			add(at("monitoring", port.key), "monitoring.%s: %d is not a port (0 disables)", port.key, port.v)
		}
	}
	fallbacks := 0
	seen := map[string]int{}
	for i, p := range c.Protocols {
		where := at("protocols", fmt.Sprintf("#%d", i))
		if p.Line > 0 && root == nil {
			where = fmt.Sprintf("%s:%d: ", file, p.Line)
		}
		field := func(key string) string { return at("protocols", fmt.Sprintf("#%d", i), key) }
		name := fmt.Sprintf("protocols[%d] (%s)", i, p.Name)
		_, builtin := protocols.Lookup(p.Name)
		switch {
		case p.Name == "":
			add(where, "protocols[%d]: name is required", i)
		case !builtin && len(p.MatchStartBytes) == 0 && len(p.MatchRegexes) == 0:
			add(where, "%s: %q is not a built-in protocol (%s); a user protocol needs match_start_bytes or match_regexes", name, p.Name, strings.Join(slices.Sorted(slices.Values(protocols.Names())), ", "))
		}
		if len(p.Target) == 0 {
			add(where, "%s: target is required", name)
		}
		for _, t := range p.Target {
			if _, err := upstream.ParseTargets([]string{t}); err != nil {
				add(field("target"), "%s: %v", name, err)
			}
		}
		for _, h := range p.MatchStartBytes {
			if b, err := hex.DecodeString(strings.ReplaceAll(h, " ", "")); err != nil || len(b) == 0 {
				add(field("match_start_bytes"), "%s: match_start_bytes %q: not hex", name, h)
			}
		}
		for _, r := range p.MatchRegexes {
			if _, err := regexp.Compile(r); err != nil {
				add(field("match_regexes"), "%s: match_regexes %q: %v", name, r, err)
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
		out = append(out, p)
	}
	return out, nil
}
