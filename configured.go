package protoplex

import (
	"fmt"

	"github.com/darkit/protoplex/internal/config"
	"github.com/darkit/protoplex/internal/guard"
	"github.com/darkit/protoplex/internal/routing"
	"github.com/darkit/protoplex/protocols"
)

// NewProtocolManagerWithConfig builds a manager from cm's current config and
// applies every later change cm reports (file edit, SIGHUP). A reload the
// manager would reject is rejected by cm too (see OnConfigCheck), so
// cm.Config() is always the configuration serving. Errors are returned by
// RunServer and Err, as with NewProtocolManager.
func NewProtocolManagerWithConfig(cm *ConfigManager, opts ...Option) *ProtocolManager {
	cfg := cm.Config()
	pm := NewProtocolManager(append([]Option{withServer(cfg.Server)}, opts...)...)
	if pm.optErr != nil {
		return pm
	}
	if err := pm.UpdateConfig(cfg); err != nil {
		pm.optErr = err
		return pm
	}
	cm.OnConfigCheck(pm.CheckConfig)
	cm.OnConfigError(func(err error) {
		pm.releasePrepared() // what CheckConfig bound for the rejected reload
		pm.stats.Reload(false)
		pm.log.Error("configuration rejected, previous configuration keeps serving", "err", err)
	})
	cm.OnConfigChange(func(c *Config) {
		if err := pm.UpdateConfig(c); err != nil {
			pm.log.Error("configuration rejected, previous configuration keeps serving", "err", err)
		}
	})
	return pm
}

// UpdateConfig applies cfg to new connections: protocols, targets, limits and
// security lists are swapped atomically; established connections continue
// untouched. cfg replaces every protocol (including ones added with
// AddProtocol). Every part is validated and built before any is applied, so
// on error nothing changes; a configuration without protocols is an error.
// When Start serves the configuration's server.listen (and, with Start or
// StartUDP, server.listen_udp), the new addresses are bound as part of the
// check and served before removed ones stop.
func (pm *ProtocolManager) UpdateConfig(cfg *Config) (err error) {
	defer func() { pm.stats.Reload(err == nil) }()
	pm.mu.Lock()
	defer pm.mu.Unlock()
	u, err := pm.prepareLocked(cfg)
	if err != nil {
		return err
	}
	// The guard goes first: it is the one part whose swap can refuse, and
	// Update changes nothing when it does.
	if err := pm.guard.Update(u.security); err != nil {
		u.discard(pm)
		return fmt.Errorf("protoplex: security: %w", err)
	}
	changes := u.routing.Changes()
	if pm.listenFromConfig {
		changes.ListenChanges(pm.settings.Load().Listen, cfg.Server.Listen)
	}
	pm.protos = u.protos
	pm.settings.Store(u.settings)
	changes.Log(pm.log)
	pm.commitLocked(u.routing)
	if pm.listenFromConfig {
		pm.listeners.Commit(cfg.Server.Listen)
	}
	if pm.udpFromConfig {
		pm.udpListeners.Commit(cfg.Server.ListenUDP)
	}
	pm.configApplied(cfg)
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
	u.routing.Discard() // the listeners it bound stay for the UpdateConfig that follows
	return nil
}

// update is a configuration fully built and not yet applied.
type update struct {
	protos   []*protocols.Protocol
	settings *settings
	security guard.Config
	routing  *routing.Plan
}

// discard releases what prepareLocked built for an update not applied.
func (u *update) discard(pm *ProtocolManager) {
	u.routing.Discard()
	pm.releasePrepared()
}

// releasePrepared closes the listeners prepareLocked bound for a reload
// that is not applied.
func (pm *ProtocolManager) releasePrepared() {
	pm.listeners.Release()
	pm.udpListeners.Release()
}

// prepareLocked validates and builds every part of cfg: settings, trusted
// proxies, guard state, routing table, backend sets and the listeners a
// reload adds. Nothing is applied.
func (pm *ProtocolManager) prepareLocked(cfg *Config) (*update, error) {
	if cfg == nil {
		return nil, fmt.Errorf("protoplex: UpdateConfig(nil)")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	protos, err := cfg.BuildProtocols() // at least one: Validate refuses a config without
	if err != nil {
		return nil, err
	}
	trusted, err := config.ParsePrefixes(cfg.Server.TrustedProxies)
	if err != nil {
		return nil, fmt.Errorf("protoplex: trusted_proxies: %w", err)
	}
	next := &settings{Server: cfg.Server, trustedProxies: trusted}
	plan, err := pm.planLocked(protos, next)
	if err != nil {
		return nil, err
	}
	// Bind the addresses the reload adds now: one that cannot be bound
	// rejects it.
	if pm.listenFromConfig {
		if err := pm.listeners.Prepare(cfg.Server.Listen); err != nil {
			plan.Discard()
			return nil, fmt.Errorf("protoplex: %w", err)
		}
	}
	if pm.udpFromConfig {
		if err := pm.udpListeners.Prepare(cfg.Server.ListenUDP); err != nil {
			plan.Discard()
			pm.listeners.Release()
			return nil, fmt.Errorf("protoplex: %w", err)
		}
	}
	return &update{protos: protos, settings: next, security: cfg.Security.Guard(), routing: plan}, nil
}
