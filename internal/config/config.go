// Package config is protoplex's one configuration model: the types of the
// YAML file (which the Go options of the root package set too), their
// defaults, one validation pass that reports every error with file:line, the
// bounds that keep any value inside what the process can honour, and the
// file watcher that reloads it.
package config

import (
	"time"

	"github.com/darkit/protoplex/protocols"
)

// Config is the YAML configuration (docs/config.md). Durations are Go
// duration strings ("5s").
type Config struct {
	Server      Server      `yaml:"server"`
	Security    Security    `yaml:"security"`
	Protocols   []Protocol  `yaml:"protocols"`
	Monitoring  Monitoring  `yaml:"monitoring"`
	Distributed Distributed `yaml:"distributed"`

	// Source is the file the config was read from ("" for embedded/Go-built).
	Source string `yaml:"-"`
}

// Server is the server: block: listeners and per-connection limits.
type Server struct {
	Listen                  StringList    `yaml:"listen"` // one string or a list in YAML
	MaxConnections          int           `yaml:"max_connections"`
	BufferSize              int           `yaml:"buffer_size"`
	IdentifyTimeout         time.Duration `yaml:"identify_timeout"`
	IdentifyMinBytes        int           `yaml:"identify_min_bytes"`
	CacheTTL                time.Duration `yaml:"cache_ttl"`
	DialTimeout             time.Duration `yaml:"dial_timeout"`
	ServerFirstWait         time.Duration `yaml:"server_first_wait"`
	OnTimeout               string        `yaml:"on_timeout"` // the protocol chosen on client silence: server_first on its entry
	IdleTimeout             time.Duration `yaml:"idle_timeout"`
	TCPKeepAlive            time.Duration `yaml:"tcp_keepalive"`
	IdentifyReadTimeout     time.Duration `yaml:"identify_read_timeout"`
	GracefulShutdownTimeout time.Duration `yaml:"graceful_shutdown_timeout"`
	AcceptProxy             bool          `yaml:"accept_proxy"`
	TrustedProxies          []string      `yaml:"trusted_proxies"`
	LogFormat               string        `yaml:"log_format"` // text (default) or json
	LogLevel                string        `yaml:"log_level"`  // debug, info (default), warn, error
	// AccessLog: one INFO line per closed connection (client, route,
	// target, bytes, duration, close reason); it follows reloads.
	AccessLog bool `yaml:"access_log"`
	// AccessLogOpen: with AccessLog, also one INFO line when a connection
	// is routed and its backend connected ("connection opened"), so a
	// session of hours is seen when it starts; at log_level debug it is
	// written either way.
	AccessLogOpen bool `yaml:"access_log_open"`
	// ListenUDP: UDP listeners (one string or a list), typically on the
	// listen port numbers; flows are routed to the protocols on UDP.
	ListenUDP StringList `yaml:"listen_udp"`
	// MaxUDPFlows bounds the UDP flow table (0: 10000); each flow holds
	// one socket, so keep it below the fd limit.
	MaxUDPFlows int `yaml:"max_udp_flows"`
	// MaxUDPFlowsPerSource bounds the UDP flows of one source (an IPv4
	// address, an IPv6 /64); 0, the default, is no cap: a resolver or a
	// NAT gateway is one source with many ports.
	MaxUDPFlowsPerSource int `yaml:"max_udp_flows_per_source"`
	// UDPIdleTimeout ends a UDP flow idle this long (0: by protocol, DNS
	// 10 s, others 2 min).
	UDPIdleTimeout time.Duration `yaml:"udp_idle_timeout"`
	// Transparent: every route's backend sees the client's own address
	// (docs/transparent.md; Linux, CAP_NET_ADMIN).
	Transparent bool `yaml:"transparent"`
	// DataPlane is how TCP connections are served: DataPlaneEvents (the
	// default) runs per-core epoll loops on Linux and goroutines elsewhere;
	// DataPlaneGoroutines runs a goroutine per connection everywhere.
	// Read at start only.
	DataPlane string `yaml:"data_plane"`
	// EventLoops is the number of event loops of the events data plane
	// (0: one per CPU, runtime.NumCPU at start). Read at start only.
	EventLoops int `yaml:"event_loops"`
}

// Security is the security: block (internal/guard enforces it).
type Security struct {
	EnableRateLimit     bool      `yaml:"enable_rate_limit"`
	RateLimit           RateLimit `yaml:"rate_limit"`
	EnableDDoSGuard     bool      `yaml:"enable_ddos_guard"`
	DDoSGuard           DDoSGuard `yaml:"ddos_guard"`
	MaxConnectionsPerIP int       `yaml:"max_connections_per_ip"`
	IPWhitelist         []string  `yaml:"ip_whitelist"`
	IPBlacklist         []string  `yaml:"ip_blacklist"`
}

// RateLimit is the per-source-IP token bucket for new connections.
type RateLimit struct {
	RequestsPerSecond float64 `yaml:"requests_per_second"`
	BurstSize         int     `yaml:"burst_size"`
}

// DDoSGuard: sources whose connections keep failing identification are
// banned temporarily, the ban doubling on each repeat.
type DDoSGuard struct {
	FailureThreshold int           `yaml:"failure_threshold"` // failed identifications per window
	Window           time.Duration `yaml:"window"`
	BanDuration      time.Duration `yaml:"ban_duration"`
	MaxBanDuration   time.Duration `yaml:"max_ban_duration"`
}

// Protocol is one entry of protocols:.
type Protocol struct {
	Name     string     `yaml:"name"`
	Target   StringList `yaml:"target"` // "a:1,b:2", or a YAML list
	Priority int        `yaml:"priority"`
	// Route conditions, each one string or a list: exact names or a
	// leading "*." wildcard (sni, host), protocol IDs (alpn).
	SNI  StringList `yaml:"sni"`
	ALPN StringList `yaml:"alpn"`
	Host StringList `yaml:"host"`
	// SNIFile and HostFile name files of sni and host names, one per line
	// ("#" comments), added to the lists above; a relative path is
	// relative to the configuration file. They are read again on every
	// reload.
	SNIFile  string `yaml:"sni_file"`
	HostFile string `yaml:"host_file"`
	Fallback bool   `yaml:"fallback"`
	// ServerFirst: this protocol is chosen when the client sends nothing
	// for server.server_first_wait (sslh's on_timeout), built in or not.
	ServerFirst bool `yaml:"server_first"`

	// User protocols (a name that is not built in): what their first
	// bytes are.
	MatchStartBytes []string `yaml:"match_start_bytes"` // hex, e.g. "aa55"
	MatchRegexes    []string `yaml:"match_regexes"`

	Balance     string        `yaml:"balance"`
	SendProxy   string        `yaml:"send_proxy"`
	Pool        Pool          `yaml:"pool"`
	HealthCheck Health        `yaml:"health_check"`
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// Source: local addresses backend connections are dialed from, in turn;
	// each an IP address or an inclusive range "127.0.0.2-127.0.0.20".
	Source StringList `yaml:"source"`
	// Transparent: this route's backend sees the client's own address
	// (as server.transparent, for one route).
	Transparent bool `yaml:"transparent"`
	// Transport narrows the entry to one transport: tcp or udp ("": every
	// transport its protocol exists on).
	Transport string `yaml:"transport"`
	// UDPIdleTimeout ends this route's UDP flows after this long without a
	// datagram (0: server.udp_idle_timeout, else the protocol's default).
	UDPIdleTimeout time.Duration `yaml:"udp_idle_timeout"`
	// UDPResponses ends this route's UDP flows once this many datagrams came
	// back per datagram sent (0: the protocol's default, 1 for DNS, else no limit; -1: no
	// limit).
	UDPResponses int `yaml:"udp_responses"`

	// Line is the YAML line of the entry, for error messages.
	Line int `yaml:"-"`
	// fileSNI and fileHost count the names SNI and Host end with that came
	// from SNIFile and HostFile (checked as they were read).
	fileSNI, fileHost int
}

// IsFallback reports whether the entry takes what nothing else matched:
// it says fallback: true, or it is the built-in catch-all anyprot (sslh's
// name for it), which is the fallback by nature.
func (p *Protocol) IsFallback() bool {
	return p.Fallback || protocols.IsAnyProt(p.Name) && len(p.MatchStartBytes)+len(p.MatchRegexes) == 0
}

// Pool and Health are a protocol's warm pool and active health checks, the
// types the protocols and upstream packages use too.
type (
	Pool   = protocols.PoolConfig
	Health = protocols.HealthConfig
)

// Monitoring is the monitoring: block. Port 0 disables a port.
type Monitoring struct {
	EnableMetrics     bool `yaml:"enable_metrics"`
	MetricsPort       int  `yaml:"metrics_port"`
	EnableHealthCheck bool `yaml:"enable_health_check"`
	HealthCheckPort   int  `yaml:"health_check_port"`
	// BindAddress is the host both ports listen on: an IP address or a host
	// name, "127.0.0.1" when not set, so the ports are not
	// reachable from other machines unless asked for ("0.0.0.0", "::").
	BindAddress string `yaml:"bind_address"`
	// Admin enables the status page's actions (drain, maint, ready a
	// target; unban; close a connection) on the metrics port, each a POST
	// with the token of AdminTokenFile (or PROTOPLEX_ADMIN_TOKEN, read by
	// the CLI) in a header.
	Admin          bool   `yaml:"admin"`
	AdminTokenFile string `yaml:"admin_token_file"`
}

// Distributed is the distributed: block (cluster mode through etcd).
type Distributed struct {
	Enable           bool     `yaml:"enable"`
	NodeID           string   `yaml:"node_id"`
	EtcdEndpoints    []string `yaml:"etcd_endpoints"`
	ServiceDiscovery struct {
		Enable          bool `yaml:"enable"`
		RefreshInterval int  `yaml:"refresh_interval"` // seconds
	} `yaml:"service_discovery"`
	LoadBalancer struct {
		Strategy            string `yaml:"strategy"`
		HealthCheckInterval int    `yaml:"health_check_interval"` // seconds
	} `yaml:"load_balancer"`
	ConfigManager struct {
		Enable      bool   `yaml:"enable"`
		WatchPrefix string `yaml:"watch_prefix"`
	} `yaml:"config_manager"`
	// LeaseTTL: a node that dies leaves the membership after this long (default 10s).
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	// StartTimeout bounds the wait at start for the first read of etcd
	// (default 10s); then the node starts from StateFile, or exits.
	StartTimeout time.Duration `yaml:"start_timeout"`
	// StateFile keeps the last shared configuration and discovered backends
	// on disk ("" = not kept), to start from while etcd is unreachable.
	StateFile string `yaml:"state_file"`
	// MaxStaleness, when set, makes the node unready once its last current
	// read of etcd is older (0 = never).
	MaxStaleness time.Duration `yaml:"max_staleness"`
}
