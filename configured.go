package protoplex

import (
	"fmt"
	"net/netip"

	"github.com/darkit/protoplex/internal/guard"
	"github.com/darkit/protoplex/protocols"
)

// NewProtocolManagerWithConfig builds a manager from cm's current config and
// applies every later change cm reports (file edit, SIGHUP). A reload the
// manager would reject is rejected by cm too (see OnConfigCheck), so
// cm.Config() is always the configuration serving. Errors are returned by
// RunServer and Err, as with NewProtocolManager.
func NewProtocolManagerWithConfig(cm *ConfigManager, opts ...Option) *ProtocolManager {
	cfg := cm.Config()
	pm := NewProtocolManager(append(cfg.options(), opts...)...)
	if pm.optErr != nil {
		return pm
	}
	if err := pm.UpdateConfig(cfg); err != nil {
		pm.optErr = err
		return pm
	}
	cm.OnConfigCheck(pm.CheckConfig)
	cm.OnConfigError(func(err error) {
		pm.stats.reloads.WithLabelValues("failure").Inc()
		pm.log.Error("configuration rejected, previous configuration keeps serving", "err", err)
	})
	cm.OnConfigChange(func(c *Config) {
		if err := pm.UpdateConfig(c); err != nil {
			pm.log.Error("configuration rejected, previous configuration keeps serving", "err", err)
		}
	})
	return pm
}

// options translates the server: block into manager options.
func (c *Config) options() []Option {
	s := c.Server
	return []Option{
		WithMaxConnections(s.MaxConnections),
		WithBufferSize(s.BufferSize),
		WithIdentifyTimeout(s.IdentifyTimeout),
		WithIdentifyMinBytes(s.IdentifyMinBytes),
		WithCacheTTL(s.CacheTTL),
		WithDialTimeout(s.DialTimeout),
		WithGracefulShutdownTimeout(s.GracefulShutdownTimeout),
		WithServerFirstWait(s.ServerFirstWait),
		WithIdleTimeout(s.IdleTimeout),
		WithTCPKeepAlive(s.TCPKeepAlive),
		WithIdentifyReadTimeout(s.IdentifyReadTimeout),
	}
}

// securityConfig translates the security: block.
func (c *Config) securityConfig() guard.Config {
	s := c.Security
	return guard.Config{
		Whitelist:           s.IPWhitelist,
		Blacklist:           s.IPBlacklist,
		EnableRateLimit:     s.EnableRateLimit,
		RequestsPerSecond:   s.RateLimit.RequestsPerSecond,
		BurstSize:           s.RateLimit.BurstSize,
		MaxConnectionsPerIP: s.MaxConnectionsPerIP,
		EnableDDoSGuard:     s.EnableDDoSGuard,
		FailureThreshold:    s.DDoSGuard.FailureThreshold,
		Window:              s.DDoSGuard.Window,
		BanDuration:         s.DDoSGuard.BanDuration,
		MaxBanDuration:      s.DDoSGuard.MaxBanDuration,
	}
}

// UpdateConfig applies cfg to new connections: protocols, targets, limits and
// security lists are swapped atomically; established connections continue
// untouched. cfg replaces every protocol (including ones added with
// AddProtocol). Every part is validated and built before any is applied, so
// on error nothing changes; a configuration without protocols is an error.
// Listen addresses are the caller's (the CLI rebinds them).
func (pm *ProtocolManager) UpdateConfig(cfg *Config) (err error) {
	defer func() {
		if err != nil {
			pm.stats.reloads.WithLabelValues("failure").Inc()
		} else {
			pm.stats.reloads.WithLabelValues("success").Inc()
		}
	}()
	pm.mu.Lock()
	defer pm.mu.Unlock()
	u, err := pm.prepareLocked(cfg)
	if err != nil {
		return err
	}
	// The guard goes first: it is the one part whose swap can refuse, and
	// Update changes nothing when it does.
	if err := pm.guard.Update(u.security); err != nil {
		u.routing.discard()
		return fmt.Errorf("protoplex: security: %w", err)
	}
	pm.protos = u.protos
	pm.settings.Store(u.settings)
	pm.commitRoutingLocked(u.routing)
	return nil
}

// CheckConfig reports the error UpdateConfig would return for cfg, without
// changing anything (ConfigManager.OnConfigCheck takes it).
func (pm *ProtocolManager) CheckConfig(cfg *Config) error {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	u, err := pm.prepareLocked(cfg)
	if err != nil {
		return err
	}
	u.routing.discard()
	return nil
}

// update is a configuration fully built and not yet applied.
type update struct {
	protos   []*protocols.Protocol
	settings *settings
	security guard.Config
	routing  *routingPlan
}

// prepareLocked validates and builds every part of cfg: options, trusted
// proxies, guard state, routing table and backend sets. Nothing is applied.
func (pm *ProtocolManager) prepareLocked(cfg *Config) (*update, error) {
	if cfg == nil {
		return nil, fmt.Errorf("protoplex: UpdateConfig(nil)")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	protos, err := cfg.BuildProtocols()
	if err != nil {
		return nil, err
	}
	if len(protos) == 0 {
		return nil, fmt.Errorf("protoplex: %s", errNoProtocolsExplain)
	}
	o := defaultOptions()
	o.logger = pm.log
	for _, opt := range cfg.options() {
		opt(&o)
	}
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("protoplex: %w", err)
	}
	next := &settings{options: o, acceptProxy: cfg.Server.AcceptProxy}
	for _, s := range cfg.Server.TrustedProxies {
		p, err := parsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("protoplex: trusted_proxies: %w", err)
		}
		next.trustedProxies = append(next.trustedProxies, p)
	}
	sec := cfg.securityConfig()
	if err := sec.Validate(); err != nil {
		return nil, fmt.Errorf("protoplex: security: %w", err)
	}
	plan, err := pm.planRoutingLocked(protos, o.cacheTTL)
	if err != nil {
		return nil, err
	}
	return &update{protos: protos, settings: next, security: sec, routing: plan}, nil
}

// parsePrefix accepts a CIDR or a single address.
func parsePrefix(s string) (netip.Prefix, error) {
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
