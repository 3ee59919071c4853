package protoplex

import "github.com/darkit/protoplex/internal/config"

// The configuration model lives in internal/config (types, defaults, one
// validation pass, bounds, the file watcher); these names are its public
// face, as the YAML file and the Go samples use them.
type (
	// Config is the YAML configuration (docs/config.md).
	Config                = config.Config
	ServerConfig          = config.Server
	SecurityConfig        = config.Security
	RateLimitConfig       = config.RateLimit
	DDoSGuardConfig       = config.DDoSGuard
	ProtocolConfig        = config.Protocol
	PoolFileConfig        = config.Pool
	HealthFileConfig      = config.Health
	MonitoringConfig      = config.Monitoring
	DistributedFileConfig = config.Distributed
	// StringList is a YAML value written as one string or a list.
	StringList = config.StringList
	// ConfigManager holds a file's current configuration and reloads it
	// when the file changes or Reload is called.
	ConfigManager = config.Watcher
)

// NewConfigManager loads path (an error names file:line) and watches it:
// each change saved to the file is reloaded (debounced), as is each Reload.
func NewConfigManager(path string) (*ConfigManager, error) { return config.Watch(path) }

// OpenConfigManager loads path (an error names file:line); with watch it
// watches the file as NewConfigManager does, without it the file is read
// again only on Reload (the CLI's SIGHUP), so a half-saved edit never goes
// live by itself.
func OpenConfigManager(path string, watch bool) (*ConfigManager, error) {
	return config.Open(path, watch)
}

// ParseConfig decodes, defaults and validates YAML; every error names
// filename:line, all of them at once.
func ParseConfig(data []byte, filename string) (*Config, error) { return config.Parse(data, filename) }

// LoadConfig reads and validates the file at path (at most 4 MiB, a
// regular file).
func LoadConfig(path string) (*Config, error) { return config.Load(path) }

// CheckConfigFile validates the file at path (protoplex -check).
func CheckConfigFile(path string) error {
	_, err := config.Load(path)
	return err
}

// DefaultConfig is the configuration used without a file: listen
// 127.0.0.1:9090, metrics 127.0.0.1:9091, health 127.0.0.1:9092,
// SSH/HTTP/TLS/Redis to their local ports.
func DefaultConfig() *Config { return config.Default() }

// DefaultConfigYAML returns the embedded default configuration.
func DefaultConfigYAML() []byte { return config.DefaultYAML() }
