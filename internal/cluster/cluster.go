// Package cluster coordinates protoplex nodes through etcd (v3 API): node
// membership under leases, backend discovery, shared configuration and
// shared bans, all watched (not polled), degrading to the last known state
// when etcd is unreachable.
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// nopZap silences the etcd client's own logger: the node logs state
// changes once, through slog.
func nopZap() *zap.Logger { return zap.NewNop() }

// Key layout.
const (
	NodesPrefix    = "/protoplex/nodes/"
	ServicesPrefix = "/protoplex/services/"
	BansPrefix     = "/protoplex/bans/"
	StatusPrefix   = "/protoplex/status/"
)

// Bounds on what the cluster state may hold: etcd is shared by every node
// and by the operators' tooling, and what it returns becomes targets and
// metric labels here.
const (
	// MaxResponseBytes bounds one etcd response (a snapshot of every
	// /protoplex/ key, or a watch batch); a larger one fails the session and
	// the node keeps serving its last known state.
	MaxResponseBytes = 32 << 20
	// MaxServicesPerProtocol bounds the instances tracked per protocol;
	// further ones are ignored (logged).
	MaxServicesPerProtocol = 1024
	// MaxProtocols bounds the protocols with discovered instances.
	MaxProtocols = 256
	// MaxNodes bounds the nodes tracked.
	MaxNodes = 1024
)

// Service is one backend instance, stored as JSON under
// /protoplex/services/<protocol>/<instance>.
type Service struct {
	Protocol string            `json:"protocol"`
	Instance string            `json:"instance"`
	Address  string            `json:"address"`
	Weight   int               `json:"weight,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// NodeInfo is a node's registration under /protoplex/nodes/<id>.
type NodeInfo struct {
	ID      string    `json:"id"`
	Address string    `json:"address"`
	Version string    `json:"version"`
	Started time.Time `json:"started"`
}

// Options of a Node.
type Options struct {
	NodeID, Address, Version string
	Endpoints                []string
	LeaseTTL                 time.Duration // default 10s
	ConfigKey                string        // e.g. "/protoplex/config"; "" = no shared config
	Resync                   time.Duration // full re-read safety net (service_discovery.refresh_interval); default 30s
	Logger                   *slog.Logger
}

// Handlers receive what the cluster says. They run on the node's goroutine,
// one at a time.
type Handlers struct {
	Services func(map[string][]Service) // protocol → instances, full snapshot on every change
	Config   func(yaml []byte) error    // an error is published under StatusPrefix/<node>
	Ban      func(ip netip.Addr, d time.Duration)
	Nodes    func([]NodeInfo)
}

// Node is this process's membership in the cluster.
type Node struct {
	opt Options
	h   Handlers
	cli *clientv3.Client
	log *slog.Logger

	mu       sync.Mutex
	services map[string]map[string]Service // protocol → instance → service
	nodes    map[string]NodeInfo
	lease    clientv3.LeaseID

	configRev int64 // ModRevision of the configuration last applied (run goroutine only)

	connected atomic.Bool
	cancel    context.CancelFunc
	done      chan struct{}
}

// Start connects, registers the node under a lease and starts watching. It
// fails only if etcd cannot be reached at all at start.
func Start(ctx context.Context, opt Options, h Handlers) (*Node, error) {
	if opt.NodeID == "" || len(opt.Endpoints) == 0 {
		return nil, errors.New("cluster: node id and etcd endpoints are required")
	}
	if opt.LeaseTTL <= 0 {
		opt.LeaseTTL = 10 * time.Second
	}
	if opt.Resync <= 0 {
		opt.Resync = 30 * time.Second
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: opt.Endpoints, DialTimeout: 5 * time.Second, Logger: nopZap(),
		MaxCallRecvMsgSize: MaxResponseBytes})
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	n := &Node{opt: opt, h: h, cli: cli, log: opt.Logger, services: map[string]map[string]Service{}, nodes: map[string]NodeInfo{}, done: make(chan struct{})}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := n.register(sctx); err != nil {
		cli.Close()
		return nil, fmt.Errorf("cluster: register node: %w", err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	n.cancel = rcancel
	go n.run(rctx)
	return n, nil
}

// Client exposes the etcd client (for the operator CLI).
func (n *Node) Client() *clientv3.Client { return n.cli }

// Connected reports whether the last etcd exchange succeeded.
func (n *Node) Connected() bool { return n.connected.Load() }

// ServiceCount returns how many backend instances are known.
func (n *Node) ServiceCount() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, m := range n.services {
		c += len(m)
	}
	return c
}

// Nodes returns the registered nodes, sorted by id.
func (n *Node) Nodes() []NodeInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.nodeList()
}

func (n *Node) nodeList() []NodeInfo {
	out := make([]NodeInfo, 0, len(n.nodes))
	for _, v := range n.nodes {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (n *Node) register(ctx context.Context) error {
	lease, err := n.cli.Grant(ctx, int64(n.opt.LeaseTTL/time.Second))
	if err != nil {
		return err
	}
	info, _ := json.Marshal(NodeInfo{ID: n.opt.NodeID, Address: n.opt.Address, Version: n.opt.Version, Started: time.Now().UTC()})
	if _, err := n.cli.Put(ctx, NodesPrefix+n.opt.NodeID, string(info), clientv3.WithLease(lease.ID)); err != nil {
		return err
	}
	n.mu.Lock()
	n.lease = lease.ID
	n.mu.Unlock()
	n.connected.Store(true)
	return nil
}

// PublishBan shares a ban with every node; it expires with its lease.
func (n *Node) PublishBan(ip netip.Addr, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lease, err := n.cli.Grant(ctx, max(int64(d/time.Second), 1))
	if err != nil {
		return err
	}
	_, err = n.cli.Put(ctx, BansPrefix+ip.String(), d.String(), clientv3.WithLease(lease.ID))
	return err
}

// run keeps the lease alive and the watches open, reconnecting with
// back-off; on reconnect it re-reads everything (so nothing is missed) and
// resumes watching from the revision it read.
func (n *Node) run(ctx context.Context) {
	defer close(n.done)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := n.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if n.connected.Swap(false) {
			n.log.Warn("etcd unreachable: serving the last known configuration and backends", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// session is one connected period: keepalive + snapshot + watches.
func (n *Node) session(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n.mu.Lock()
	lease := n.lease
	n.mu.Unlock()
	ka, err := n.cli.KeepAlive(ctx, lease)
	if err == nil {
		// The first response proves the lease still exists.
		select {
		case r, ok := <-ka:
			if !ok || r == nil {
				err = errors.New("lease lost")
			}
		case <-time.After(n.opt.LeaseTTL):
			err = errors.New("keepalive timeout")
		}
	}
	if err != nil {
		// The lease expired during an outage: register again.
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		err = n.register(rctx)
		rcancel()
		if err != nil {
			return err
		}
		n.mu.Lock()
		lease = n.lease
		n.mu.Unlock()
		if ka, err = n.cli.KeepAlive(ctx, lease); err != nil {
			return err
		}
	}
	rev, err := n.snapshot(ctx)
	if err != nil {
		return err
	}
	if !n.connected.Swap(true) {
		n.log.Info("etcd connected")
	}
	wch := n.cli.Watch(clientv3.WithRequireLeader(ctx), "/protoplex/", clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	resync := time.NewTicker(n.opt.Resync)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case _, ok := <-ka:
			if !ok {
				return errors.New("keepalive ended")
			}
		case <-resync.C:
			if _, err := n.snapshot(ctx); err != nil {
				return err
			}
		case wr, ok := <-wch:
			if !ok {
				return errors.New("watch closed")
			}
			if err := wr.Err(); err != nil {
				return err // compaction or leader loss: the next session re-reads
			}
			n.apply(wr.Events, true)
		}
	}
}

// snapshot reads every key the node cares about and hands full state to
// the handlers; it returns the revision read.
func (n *Node) snapshot(ctx context.Context) (int64, error) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := n.cli.Get(rctx, "/protoplex/", clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	n.mu.Lock()
	n.services = map[string]map[string]Service{}
	n.nodes = map[string]NodeInfo{}
	n.mu.Unlock()
	var evs []*clientv3.Event
	for _, kv := range resp.Kvs {
		evs = append(evs, &clientv3.Event{Type: clientv3.EventTypePut, Kv: kv})
	}
	n.apply(evs, false)
	if n.h.Services != nil {
		n.h.Services(n.servicesSnapshot())
	}
	if n.h.Nodes != nil {
		n.h.Nodes(n.Nodes())
	}
	return resp.Header.Revision, nil
}

// apply folds events into the node's state; notify calls the Services and
// Nodes handlers for what changed (a snapshot calls them itself).
func (n *Node) apply(evs []*clientv3.Event, notify bool) {
	servicesChanged, nodesChanged := false, false
	ignored := 0 // over a bound, logged once per batch
	defer func() {
		if ignored > 0 {
			n.log.Warn("cluster state over its bounds: entries ignored", "ignored", ignored,
				"max_services_per_protocol", MaxServicesPerProtocol, "max_protocols", MaxProtocols, "max_nodes", MaxNodes)
		}
	}()
	for _, ev := range evs {
		key := string(ev.Kv.Key)
		put := ev.Type == clientv3.EventTypePut
		switch {
		case strings.HasPrefix(key, ServicesPrefix):
			proto, inst, ok := strings.Cut(strings.TrimPrefix(key, ServicesPrefix), "/")
			if !ok {
				continue
			}
			n.mu.Lock()
			if put {
				var s Service
				if err := json.Unmarshal(ev.Kv.Value, &s); err != nil || s.Address == "" {
					n.mu.Unlock()
					n.log.Warn("ignoring malformed service", "key", key, "err", err)
					continue
				}
				s.Protocol, s.Instance = proto, inst
				m := n.services[proto]
				_, known := m[inst]
				if (m == nil && len(n.services) >= MaxProtocols) || (!known && len(m) >= MaxServicesPerProtocol) {
					n.mu.Unlock()
					ignored++
					continue
				}
				if m == nil {
					m = map[string]Service{}
					n.services[proto] = m
				}
				m[inst] = s
			} else {
				delete(n.services[proto], inst)
				if len(n.services[proto]) == 0 {
					delete(n.services, proto)
				}
			}
			n.mu.Unlock()
			servicesChanged = true
		case strings.HasPrefix(key, NodesPrefix):
			id := strings.TrimPrefix(key, NodesPrefix)
			n.mu.Lock()
			if put {
				var info NodeInfo
				_, known := n.nodes[id]
				switch {
				case !known && len(n.nodes) >= MaxNodes:
					ignored++
				case json.Unmarshal(ev.Kv.Value, &info) == nil:
					n.nodes[id] = info
				}
			} else {
				delete(n.nodes, id)
			}
			n.mu.Unlock()
			nodesChanged = true
		case strings.HasPrefix(key, BansPrefix) && put && n.h.Ban != nil:
			ip, err := netip.ParseAddr(strings.TrimPrefix(key, BansPrefix))
			d, derr := time.ParseDuration(string(ev.Kv.Value))
			if err == nil && derr == nil {
				n.h.Ban(ip, d)
			}
		case n.opt.ConfigKey != "" && key == n.opt.ConfigKey && put && n.h.Config != nil:
			if ev.Kv.ModRevision == n.configRev {
				continue // already applied (a resync re-reads it)
			}
			n.configRev = ev.Kv.ModRevision
			status := "ok"
			if err := n.h.Config(ev.Kv.Value); err != nil {
				status = "rejected: " + err.Error()
				n.log.Error("configuration from etcd rejected, the running configuration keeps serving", "err", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			n.cli.Put(ctx, StatusPrefix+n.opt.NodeID, status)
			cancel()
		}
	}
	if !notify {
		return
	}
	if servicesChanged && n.h.Services != nil {
		n.h.Services(n.servicesSnapshot())
	}
	if nodesChanged && n.h.Nodes != nil {
		n.h.Nodes(n.Nodes())
	}
}

func (n *Node) servicesSnapshot() map[string][]Service {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[string][]Service, len(n.services))
	for proto, m := range n.services {
		for _, s := range m {
			out[proto] = append(out[proto], s)
		}
		sort.Slice(out[proto], func(i, j int) bool { return out[proto][i].Instance < out[proto][j].Instance })
	}
	return out
}

// Close deregisters the node (revoking its lease) and stops watching.
func (n *Node) Close() error {
	n.cancel()
	<-n.done
	n.mu.Lock()
	lease := n.lease
	n.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	n.cli.Revoke(ctx, lease)
	cancel()
	return n.cli.Close()
}

// Register writes a service instance (operator CLI / backends). ttl 0 keeps
// it until Deregister.
func Register(ctx context.Context, cli *clientv3.Client, s Service, ttl time.Duration) error {
	val, _ := json.Marshal(s)
	var opts []clientv3.OpOption
	if ttl > 0 {
		lease, err := cli.Grant(ctx, max(int64(ttl/time.Second), 1))
		if err != nil {
			return err
		}
		opts = append(opts, clientv3.WithLease(lease.ID))
	}
	_, err := cli.Put(ctx, ServicesPrefix+s.Protocol+"/"+s.Instance, string(val), opts...)
	return err
}

// Deregister removes a service instance.
func Deregister(ctx context.Context, cli *clientv3.Client, protocol, instance string) error {
	_, err := cli.Delete(ctx, ServicesPrefix+protocol+"/"+instance)
	return err
}

// Target is s as a target of a protocol's list: its address, with ";w=N"
// when it weighs more than 1.
func (s Service) Target() string {
	if s.Weight > 1 {
		return fmt.Sprintf("%s;w=%d", s.Address, s.Weight)
	}
	return s.Address
}
