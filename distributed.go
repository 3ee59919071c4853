package protoplex

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
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
	// LeaseTTL bounds how long a dead node stays registered (default 10s),
	// and how long etcd may stay silent before the node declares it lost.
	LeaseTTL time.Duration
	// StartTimeout bounds the wait for the first read of etcd before
	// serving (default 10s); then the node starts from StateFile or fails.
	StartTimeout time.Duration
	// StateFile keeps the last shared configuration and discovered
	// backends on disk ("" = not kept), to start from while etcd is down.
	StateFile string
	// MaxStaleness makes the node unready once its view of etcd is older
	// (0 = never).
	MaxStaleness time.Duration
	// Options are passed to the underlying ProtocolManager.
	Options []Option
}

// ServiceDiscoveryConfig: backends registered in etcd under
// /protoplex/services/<protocol>/<instance> join that protocol's targets.
type ServiceDiscoveryConfig struct {
	Enable bool
	// RefreshInterval is accepted and ignored: watches resume from their
	// last revision and the node asks etcd for progress every LeaseTTL/3,
	// so no periodic full read is needed.
	RefreshInterval int
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

// NewDistributedManager connects to etcd, registers the node, applies the
// cluster's state (shared configuration, discovered backends, bans) read
// at one revision, and starts watching; it returns once that state is
// applied, so the node serves it from its first connection. When etcd does
// not answer within StartTimeout it starts from StateFile, or fails.
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
		NodeID:       cfg.NodeID,
		Address:      cfg.Advertise,
		Version:      "protoplex",
		Endpoints:    cfg.EtcdEndpoints,
		LeaseTTL:     cfg.LeaseTTL,
		ConfigKey:    configKey,
		StartTimeout: cfg.StartTimeout,
		StateFile:    cfg.StateFile,
		Logger:       pm.log,
	}, cluster.Handlers{
		Services: dm.onServices,
		Config:   dm.onConfig,
		Ban:      pm.Ban,
		Unban:    pm.Unban,
		Nodes:    func(ns []cluster.NodeInfo) { pm.stats.ClusterNodes.Set(float64(len(ns))) },
	})
	if err != nil {
		pm.Close()
		return nil, err
	}
	dm.node = node
	pm.setClusterStatus(func() metrics.ClusterState {
		s := metrics.ClusterState{Distributed: true, NodeID: cfg.NodeID, EtcdConnected: node.Connected(), Services: node.ServiceCount()}
		now := time.Now()
		for _, n := range node.Nodes() {
			if len(s.Members) == metrics.MaxClusterMembers {
				break
			}
			s.Members = append(s.Members, metrics.ClusterMember{ID: n.ID, Address: n.Address, Version: n.Version, UptimeSeconds: now.Sub(n.Started).Seconds()})
		}
		return s
	})
	if err := pm.stats.RegisterCluster(func() float64 { return dm.syncAge().Seconds() }); err != nil {
		node.Close()
		pm.Close()
		return nil, err
	}
	ready := dm.ready
	pm.cluster.Store(&ready)
	// Bans this node's DDoS guard issues are enforced by every node.
	// PublishBan only queues (this runs on the data plane); a full queue
	// is logged at most once a second.
	var warned atomic.Int64
	pm.OnBan(func(ip netip.Addr, d time.Duration) {
		if err := node.PublishBan(ip, d); err != nil {
			if now := time.Now().Unix(); warned.Swap(now) != now {
				pm.log.Warn("could not share ban", "source", ip.String(), "err", err)
			}
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
		StartTimeout:     d.StartTimeout,
		StateFile:        d.StateFile,
		MaxStaleness:     d.MaxStaleness,
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

// syncAge is how old the node's view of etcd is: since its last current
// read, or since the saved state it started from was written.
func (dm *DistributedManager) syncAge() time.Duration {
	t := dm.node.LastSync()
	if t.IsZero() {
		t = dm.node.SavedAt()
	}
	return time.Since(t)
}

// ready is the cluster's part of readiness: unready once the view of etcd
// is older than MaxStaleness (when set); the detail line says where the
// state comes from.
func (dm *DistributedManager) ready() (bool, string) {
	age := dm.syncAge().Round(100 * time.Millisecond)
	var detail string
	switch {
	case dm.node.Connected():
		detail = fmt.Sprintf("cluster: etcd connected, last sync %v ago", age)
	case dm.node.LastSync().IsZero():
		detail = fmt.Sprintf("cluster: etcd unreachable since start: serving the state saved at %s (%v old)", dm.node.SavedAt().Format(time.RFC3339), age)
	default:
		detail = fmt.Sprintf("cluster: etcd unreachable: serving the state read %v ago", age)
	}
	if limit := dm.cfg.MaxStaleness; limit > 0 && age > limit {
		return false, detail + fmt.Sprintf(", over distributed.max_staleness (%v)", limit)
	}
	return true, detail
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
	counts := make(map[string]int, len(s))
	for proto, insts := range s {
		for _, in := range insts {
			found[strings.ToLower(proto)] = append(found[strings.ToLower(proto)], in.Target())
		}
		counts[proto] = len(insts)
	}
	dm.pm.stats.Discovered(counts)
	dm.mu.Lock()
	dm.discovered = found
	dm.mu.Unlock()
	if err := dm.apply(); err != nil {
		dm.pm.log.Error("discovered backends not applied", "err", err)
	}
}

// onConfig applies the configuration shared through etcd. The node's own
// distributed settings stand (the shared file does not carry them), so a
// protocol there may list target: [] when this node discovers targets.
func (dm *DistributedManager) onConfig(yaml []byte) error {
	node := dm.cfg.Config.Distributed
	node.Enable = true
	node.ServiceDiscovery.Enable = dm.cfg.ServiceDiscovery.Enable
	c, err := config.ParseShared(yaml, "etcd:"+dm.cfg.ConfigManager.WatchPrefix, node)
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
// balancer defaults added; dm.mu is held. With discovery on, a protocol may
// list no target of its own (target: []): the merged configuration says
// so, as the node's file does. Until an instance registers, its
// connections are identified and closed (a dial error), as when every
// target is down.
func (dm *DistributedManager) mergeLocked(base *Config) *Config {
	lb := dm.cfg.LoadBalancer
	merged := base.Merged(dm.discovered, lb.Strategy, time.Duration(lb.HealthCheckInterval)*time.Second)
	if dm.cfg.ServiceDiscovery.Enable {
		merged.Distributed.Enable, merged.Distributed.ServiceDiscovery.Enable = true, true
	}
	return merged
}
