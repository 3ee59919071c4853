package protoplex

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/darkit/protoplex/internal/cluster"
	"github.com/darkit/protoplex/internal/config"
	"github.com/darkit/protoplex/internal/metrics"
)

// DistributedConfig configures a node of a cluster coordinated through etcd.
type DistributedConfig struct {
	NodeID           string
	EtcdEndpoints    []string
	ServiceDiscovery ServiceDiscoveryConfig
	LoadBalancer     LoadBalancerConfig
	ConfigManager    ConfigManagerConfig

	// Config is the node's own configuration (protocols, security, server);
	// nil means DefaultConfig. Configuration found in etcd replaces it.
	Config *Config
	// Advertise is the address other nodes see for this one (informational).
	Advertise string
	// LeaseTTL bounds how long a dead node stays registered (default 10s).
	LeaseTTL time.Duration
	// Options are passed to the underlying ProtocolManager.
	Options []Option
}

// ServiceDiscoveryConfig: backends registered in etcd under
// /protoplex/services/<protocol>/<instance> join that protocol's targets.
type ServiceDiscoveryConfig struct {
	Enable          bool
	RefreshInterval int // seconds between full re-reads (a safety net; changes are watched)
}

// LoadBalancerConfig sets defaults for protocols that set none.
type LoadBalancerConfig struct {
	Strategy            string // balance strategy
	HealthCheckInterval int    // seconds; active TCP checks of every target
}

// ConfigManagerConfig: the YAML stored at WatchPrefix in etcd is the
// configuration of every node (validated like a file; a bad one is rejected
// and reported under /protoplex/status/<node>).
type ConfigManagerConfig struct {
	Enable      bool
	WatchPrefix string
}

// DistributedManager is a ProtocolManager coordinated through etcd.
type DistributedManager struct {
	pm   *ProtocolManager
	node *cluster.Node
	cfg  DistributedConfig

	mu         sync.Mutex
	base       *Config             // from the node or from etcd
	discovered map[string][]string // protocol (lower case) → targets
}

// NewDistributedManager connects to etcd, registers the node and starts
// watching.
func NewDistributedManager(cfg DistributedConfig) (*DistributedManager, error) {
	if cfg.Config == nil {
		cfg.Config = DefaultConfig()
	}
	pm := NewProtocolManager(append([]Option{withServer(cfg.Config.Server)}, cfg.Options...)...)
	if err := pm.Err(); err != nil {
		return nil, err
	}
	dm := &DistributedManager{pm: pm, cfg: cfg, base: cfg.Config}
	if err := dm.apply(); err != nil {
		pm.Close()
		return nil, err
	}
	configKey := ""
	if cfg.ConfigManager.Enable {
		configKey = cfg.ConfigManager.WatchPrefix
		if configKey == "" {
			configKey = config.DefaultWatchPrefix
		}
	}
	node, err := cluster.Start(context.Background(), cluster.Options{
		NodeID:    cfg.NodeID,
		Address:   cfg.Advertise,
		Version:   "protoplex",
		Endpoints: cfg.EtcdEndpoints,
		LeaseTTL:  cfg.LeaseTTL,
		ConfigKey: configKey,
		Resync:    time.Duration(cfg.ServiceDiscovery.RefreshInterval) * time.Second,
		Logger:    pm.log,
	}, cluster.Handlers{
		Services: dm.onServices,
		Config:   dm.onConfig,
		Ban:      pm.Ban,
		Nodes:    func(ns []cluster.NodeInfo) { pm.stats.ClusterNodes.Set(float64(len(ns))) },
	})
	if err != nil {
		pm.Close()
		return nil, err
	}
	dm.node = node
	pm.setClusterStatus(func() metrics.ClusterState {
		return metrics.ClusterState{Distributed: true, NodeID: cfg.NodeID, EtcdConnected: node.Connected(), Services: node.ServiceCount()}
	})
	// Bans this node's DDoS guard issues are enforced by every node.
	pm.OnBan(func(ip netip.Addr, d time.Duration) {
		if err := node.PublishBan(ip, d); err != nil {
			pm.log.Warn("could not share ban", "source", ip.String(), "err", err)
		}
	})
	return dm, nil
}

// UpdateConfig replaces the node's own configuration (a file reload); etcd's
// discovered backends are merged in again. On error nothing changes.
func (dm *DistributedManager) UpdateConfig(c *Config) error {
	dm.mu.Lock()
	defer dm.mu.Unlock()
	if err := dm.pm.UpdateConfig(dm.mergeLocked(c)); err != nil {
		return err
	}
	dm.base = c
	return nil
}

// DistributedConfigFrom builds a DistributedConfig from the distributed:
// block of c (c itself becomes the node's configuration).
func DistributedConfigFrom(c *Config) DistributedConfig {
	d := c.Distributed
	return DistributedConfig{
		NodeID:           d.NodeID,
		EtcdEndpoints:    d.EtcdEndpoints,
		ServiceDiscovery: ServiceDiscoveryConfig{Enable: d.ServiceDiscovery.Enable, RefreshInterval: d.ServiceDiscovery.RefreshInterval},
		LoadBalancer:     LoadBalancerConfig{Strategy: d.LoadBalancer.Strategy, HealthCheckInterval: d.LoadBalancer.HealthCheckInterval},
		ConfigManager:    ConfigManagerConfig{Enable: d.ConfigManager.Enable, WatchPrefix: d.ConfigManager.WatchPrefix},
		Config:           c,
		LeaseTTL:         d.LeaseTTL,
	}
}

// Manager returns the underlying ProtocolManager (metrics, health...).
func (dm *DistributedManager) Manager() *ProtocolManager { return dm.pm }

// GetServiceCount returns how many backend instances etcd announced.
func (dm *DistributedManager) GetServiceCount() int { return dm.node.ServiceCount() }

// Connected reports whether etcd is reachable now.
func (dm *DistributedManager) Connected() bool { return dm.node.Connected() }

// RunServer serves addr like ProtocolManager.RunServer.
func (dm *DistributedManager) RunServer(ctx context.Context, addr string) error {
	return dm.pm.RunServer(ctx, addr)
}

// Close deregisters the node and closes the manager.
func (dm *DistributedManager) Close() error {
	err := dm.node.Close()
	dm.pm.Close()
	return err
}

func (dm *DistributedManager) onServices(s map[string][]cluster.Service) {
	if !dm.cfg.ServiceDiscovery.Enable {
		return
	}
	found := map[string][]string{}
	for proto, insts := range s {
		for _, in := range insts {
			found[strings.ToLower(proto)] = append(found[strings.ToLower(proto)], in.Target())
		}
		dm.pm.stats.Discovered(proto, len(insts))
	}
	dm.mu.Lock()
	dm.discovered = found
	dm.mu.Unlock()
	if err := dm.apply(); err != nil {
		dm.pm.log.Error("discovered backends not applied", "err", err)
	}
}

func (dm *DistributedManager) onConfig(yaml []byte) error {
	c, err := ParseConfig(yaml, "etcd:"+dm.cfg.ConfigManager.WatchPrefix)
	if err != nil {
		dm.pm.stats.Reload(false)
		return err
	}
	return dm.UpdateConfig(c)
}

// apply merges the base configuration with discovered backends and the
// load balancer defaults, then swaps it in through UpdateConfig (the same
// path as a file reload). dm.mu serialises the merges and their swaps.
func (dm *DistributedManager) apply() error {
	dm.mu.Lock()
	defer dm.mu.Unlock()
	return dm.pm.UpdateConfig(dm.mergeLocked(dm.base))
}

// CheckConfig reports the error UpdateConfig would return for c, without
// changing anything (for ConfigManager.OnConfigCheck).
func (dm *DistributedManager) CheckConfig(c *Config) error {
	dm.mu.Lock()
	merged := dm.mergeLocked(c)
	dm.mu.Unlock()
	return dm.pm.CheckConfig(merged)
}

// mergeLocked returns base with the discovered backends and the load
// balancer defaults added; dm.mu is held.
func (dm *DistributedManager) mergeLocked(base *Config) *Config {
	lb := dm.cfg.LoadBalancer
	return base.Merged(dm.discovered, lb.Strategy, time.Duration(lb.HealthCheckInterval)*time.Second)
}
