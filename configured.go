package protoplex

import (
	"fmt"
	"net/netip"

	"github.com/darkit/protoplex/internal/guard"
)

// NewProtocolManagerWithConfig builds a manager from cm's current config and
// applies every later change cm reports (file edit, SIGHUP). Errors are
// returned by RunServer and Err, as with NewProtocolManager.
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
	cm.OnConfigError(func(error) { pm.stats.reloads.WithLabelValues("failure").Inc() })
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
// AddProtocol). On error nothing changes. Listen addresses are the caller's
// (the CLI rebinds them).
func (pm *ProtocolManager) UpdateConfig(cfg *Config) (err error) {
	defer func() {
		if err != nil {
			pm.stats.reloads.WithLabelValues("failure").Inc()
		} else {
			pm.stats.reloads.WithLabelValues("success").Inc()
		}
	}()
	if cfg == nil {
		return fmt.Errorf("protoplex: UpdateConfig(nil)")
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	protos, err := cfg.BuildProtocols()
	if err != nil {
		return err
	}
	o := defaultOptions()
	o.logger = pm.log
	for _, opt := range cfg.options() {
		opt(&o)
	}
	if err := o.validate(); err != nil {
		return fmt.Errorf("protoplex: %w", err)
	}
	next := &settings{options: o, acceptProxy: cfg.Server.AcceptProxy}
	for _, s := range cfg.Server.TrustedProxies {
		p, err := parsePrefix(s)
		if err != nil {
			return fmt.Errorf("protoplex: trusted_proxies: %w", err)
		}
		next.trustedProxies = append(next.trustedProxies, p)
	}
	pm.mu.Lock()
	defer pm.mu.Unlock()
	oldProtos, oldSettings := pm.protos, pm.settings.Load()
	pm.protos = protos
	pm.settings.Store(next)
	if err := pm.rebuildLocked(); err != nil {
		pm.protos = oldProtos
		pm.settings.Store(oldSettings)
		return err
	}
	// Lists were validated with the file; an error here means a Go-built
	// Config with a bad entry, and the old lists stay.
	if err := pm.guard.Update(cfg.securityConfig()); err != nil {
		return fmt.Errorf("protoplex: security: %w", err)
	}
	return nil
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
