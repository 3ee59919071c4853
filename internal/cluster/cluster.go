// Package cluster coordinates protoplex nodes through etcd (v3 API): node
// membership under leases, backend discovery, shared configuration and
// shared bans, all watched (not polled), degrading to the last known state
// when etcd is unreachable.
//
// One full read at start (a single transaction, so every prefix is read at
// one revision), then watches that resume from the last revision they
// delivered; everything is read again only after a compaction. What the
// node knows is a pure state (state.go) that events fold into; handler
// calls, lease look-ups and the status write are done at its edge.
//
// Bounds: MaxResponseBytes per etcd response, MaxServicesPerProtocol,
// MaxProtocols, MaxNodes, MaxBans entries, MaxStateBytes for the saved
// state file; one pending status write of at most MaxStatusBytes, under the
// node's lease; maxPendingBans bans waiting to be
// published; maxLeaseLookups lease look-ups per full read; back-off at
// most min(5 s, lease_ttl/3).
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// nopZap silences the etcd client's own logger: the node logs state
// changes once, through slog.
func nopZap() *zap.Logger { return zap.NewNop() }

// Key layout. Status keys sit outside the range the nodes watch
// ([/protoplex/, StatusPrefix)): each node writes its own after a
// configuration change, and no other node needs to hear of it. A node's
// status key is under its lease, as its nodes key is: it goes with the
// node (Close revokes the lease; a node that dies without closing lets it
// lapse after LeaseTTL), so nodes that come and go with random ids (pods,
// autoscaling) leave no key behind.
const (
	NodesPrefix    = "/protoplex/nodes/"
	ServicesPrefix = "/protoplex/services/"
	BansPrefix     = "/protoplex/bans/"
	StatusPrefix   = "/protoplex/status/"
	watchStart     = "/protoplex/"
)

// Bounds on what the cluster state may hold: etcd is shared by every node
// and by the operators' tooling, and what it returns becomes targets and
// metric labels here.
const (
	// MaxResponseBytes bounds one etcd response (the start snapshot, or a
	// watch batch); a larger one fails the session and the node keeps
	// serving its last known state.
	MaxResponseBytes = 32 << 20
	// MaxServicesPerProtocol bounds the instances tracked per protocol;
	// further ones are ignored (logged).
	MaxServicesPerProtocol = 1024
	// MaxProtocols bounds the protocols with discovered instances.
	MaxProtocols = 256
	// MaxNodes bounds the nodes tracked.
	MaxNodes = 1024
	// MaxBans bounds the shared bans tracked (the snapshot reads at most
	// this many ban keys, about 100 bytes each, so a flood of bans cannot
	// push the snapshot past MaxResponseBytes).
	MaxBans = 1 << 16
	// MaxStateBytes bounds the saved state file read at start.
	MaxStateBytes = MaxResponseBytes
	// MaxStatusBytes bounds the value of a node's status key (a rejected
	// configuration's error can quote the configuration); a longer one is
	// cut, marked with a trailing "…".
	MaxStatusBytes = 4096
)

// Back-off between sessions: doubled after each failure before the node
// connected, reset once it has.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
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
	LeaseTTL                 time.Duration // default 10s; also how long an unanswered etcd takes to be declared lost
	ConfigKey                string        // e.g. "/protoplex/config"; "" = no shared config
	// StartTimeout bounds Start's wait for the first consistent read
	// (default 10s). When it passes, Start fails, or starts from StateFile.
	StartTimeout time.Duration
	// StateFile keeps the last good shared configuration and discovered
	// backends ("" = none), written atomically after each change; Start
	// falls back to it when etcd cannot be reached.
	StateFile string
	Logger    *slog.Logger
}

// Handlers receive what the cluster says. They run one at a time: during
// Start on its caller's goroutine, then on the node's.
type Handlers struct {
	Services func(map[string][]Service) // protocol → instances, full snapshot on every change
	Config   func(yaml []byte) error    // an error is published under StatusPrefix/<node>
	Ban      func(ip netip.Addr, d time.Duration)
	Unban    func(ip netip.Addr) // a ban key deleted before its lease ended
	Nodes    func([]NodeInfo)
}

// Node is this process's membership in the cluster.
type Node struct {
	opt Options
	h   Handlers
	cli *clientv3.Client
	log *slog.Logger

	mu sync.Mutex
	st *state // written by the node's goroutine under mu; read by the accessors

	// The node's goroutine only (Start's caller before it runs):
	lease        clientv3.LeaseID
	ranges       []watchRange
	needSnapshot bool
	// entries ignored since ignoredLogged (over a bound, or malformed)
	ignored, malformed int
	ignoredLogged      time.Time

	connected atomic.Bool
	lastSync  atomic.Int64 // unix nanoseconds of the last read proven current (0 = never)
	snapshots atomic.Int64 // full reads done
	backoff   atomic.Int64 // the last wait between sessions (a time.Duration); written by run
	savedAt   time.Time    // the state file's time, when Start fell back to it

	status chan string // the last status to write; one pending at most
	// lastStatus: the last status reported, written again under a new
	// lease (the old lease took the key with it). statusLease: the lease
	// the status key is written under (0: none yet).
	lastStatus  atomic.Pointer[string]
	statusLease atomic.Int64
	banLease    banLeases
	bansOut     chan published // bans to publish; at most maxPendingBans

	cancel context.CancelFunc
	done   chan struct{}
}

// watchRange is one watched key range and the revision it delivered last.
type watchRange struct {
	key, end string // end "" = the single key
	rev      int64
}

// Start connects, registers the node under a lease and reads the cluster
// state once, calling the handlers with it before it returns, so that the
// node serves the shared configuration and discovered backends from its
// first connection. When etcd does not answer within StartTimeout it starts
// from StateFile if one was saved, and fails otherwise.
func Start(ctx context.Context, opt Options, h Handlers) (*Node, error) {
	if opt.NodeID == "" || len(opt.Endpoints) == 0 {
		return nil, errors.New("cluster: node id and etcd endpoints are required")
	}
	if opt.LeaseTTL <= 0 {
		opt.LeaseTTL = 10 * time.Second
	}
	if opt.StartTimeout <= 0 {
		opt.StartTimeout = 10 * time.Second
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: opt.Endpoints, DialTimeout: 5 * time.Second, Logger: nopZap(),
		MaxCallRecvMsgSize: MaxResponseBytes})
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	n := &Node{opt: opt, h: h, cli: cli, log: opt.Logger, st: newState(opt.ConfigKey), needSnapshot: true,
		status: make(chan string, 1), bansOut: make(chan published, maxPendingBans), done: make(chan struct{})}
	n.backoff.Store(int64(minBackoff))
	n.ranges = []watchRange{{key: watchStart, end: StatusPrefix}}
	if k := opt.ConfigKey; k != "" && !(k >= watchStart && k < StatusPrefix) {
		n.ranges = append(n.ranges, watchRange{key: k})
	}
	sctx, cancel := context.WithTimeout(ctx, opt.StartTimeout)
	err = n.connect(sctx)
	cancel()
	connected := err == nil
	if err != nil {
		saved, lerr := loadState(opt.StateFile)
		if lerr != nil {
			cli.Close()
			if opt.StateFile == "" {
				return nil, fmt.Errorf("cluster: etcd unreachable at start: %w", err)
			}
			return nil, fmt.Errorf("cluster: etcd unreachable at start: %w; no saved state to start from: %v", err, lerr)
		}
		n.restore(saved)
		n.log.Warn("etcd unreachable at start: serving the state saved before", "saved", saved.Saved, "state_file", opt.StateFile, "err", err)
	} else {
		n.setConnected(true, nil)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	n.cancel = rcancel
	var helpers sync.WaitGroup
	helpers.Add(2)
	go func() { defer helpers.Done(); n.writeStatus(rctx) }()
	go func() { defer helpers.Done(); n.publishBans(rctx) }()
	go func() {
		n.run(rctx, connected)
		helpers.Wait()
		close(n.done)
	}()
	return n, nil
}

// Client exposes the etcd client (for the operator CLI).
func (n *Node) Client() *clientv3.Client { return n.cli }

// Connected reports whether the node is in session with etcd: its lease
// kept alive and its watches current.
func (n *Node) Connected() bool { return n.connected.Load() }

// LastSync is when the node last knew its state current: the end of a
// full read, a watch event or an answered progress request. It is zero
// when the node never read etcd (started from its saved state).
func (n *Node) LastSync() time.Time {
	if ns := n.lastSync.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// SavedAt is the time of the saved state the node started from, zero when
// it started from etcd.
func (n *Node) SavedAt() time.Time { return n.savedAt }

// ServiceCount returns how many backend instances are known.
func (n *Node) ServiceCount() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, m := range n.st.services {
		c += len(m)
	}
	return c
}

// Nodes returns the registered nodes, sorted by id.
func (n *Node) Nodes() []NodeInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]NodeInfo, 0, len(n.st.nodes))
	for _, v := range n.st.nodes {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// setConnected records the session state and logs each change once.
func (n *Node) setConnected(up bool, err error) {
	if n.connected.Swap(up) == up {
		return
	}
	if up {
		n.log.Info("etcd connected")
	} else {
		n.log.Warn("etcd disconnected: serving the last known configuration and backends", "err", err)
	}
}

func (n *Node) synced() { n.lastSync.Store(time.Now().UnixNano()) }

// connect makes sure the node's lease is alive (registering again when it
// is not) and reads everything when the node's state is not current.
func (n *Node) connect(ctx context.Context) error {
	if err := n.ensureLease(ctx); err != nil {
		return err
	}
	if n.needSnapshot {
		return n.snapshot(ctx)
	}
	return nil
}

// ensureLease proves the node's lease alive, or registers the node under a
// new one when it expired (or there was none).
func (n *Node) ensureLease(ctx context.Context) error {
	if n.lease != 0 {
		_, err := n.cli.KeepAliveOnce(ctx, n.lease)
		if err == nil || !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return err
		}
	}
	lease, err := n.cli.Grant(ctx, int64(n.opt.LeaseTTL/time.Second))
	if err != nil {
		return err
	}
	info, _ := json.Marshal(NodeInfo{ID: n.opt.NodeID, Address: n.opt.Address, Version: n.opt.Version, Started: time.Now().UTC()})
	if _, err := n.cli.Put(ctx, NodesPrefix+n.opt.NodeID, string(info), clientv3.WithLease(lease.ID)); err != nil {
		return err
	}
	n.lease = lease.ID
	n.statusLease.Store(int64(lease.ID))
	if s := n.lastStatus.Load(); s != nil { // a lost lease took the status key with it
		n.reportStatus(*s)
	}
	return nil
}

// snapshot reads every watched key in one transaction (one revision),
// replaces the state with it and performs what changed.
func (n *Node) snapshot(ctx context.Context) error {
	ops := []clientv3.Op{
		clientv3.OpGet(NodesPrefix, clientv3.WithPrefix(), clientv3.WithLimit(MaxNodes)),
		clientv3.OpGet(ServicesPrefix, clientv3.WithPrefix()),
		clientv3.OpGet(BansPrefix, clientv3.WithPrefix(), clientv3.WithLimit(MaxBans)),
	}
	if n.opt.ConfigKey != "" {
		ops = append(ops, clientv3.OpGet(n.opt.ConfigKey))
	}
	resp, err := n.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return err
	}
	var evs []event
	for _, r := range resp.Responses {
		rr := r.GetResponseRange()
		if rr == nil {
			continue
		}
		for _, kv := range rr.Kvs {
			evs = append(evs, event{Key: string(kv.Key), Value: kv.Value, ModRev: kv.ModRevision, Lease: kv.Lease})
		}
	}
	n.snapshots.Add(1)
	n.mu.Lock()
	c := n.st.replace(evs)
	n.mu.Unlock()
	for i := range n.ranges {
		n.ranges[i].rev = resp.Header.Revision
	}
	n.needSnapshot = false
	n.synced()
	n.perform(ctx, c, true)
	return nil
}

// fold applies watched events and performs what changed.
func (n *Node) fold(ctx context.Context, evs []*clientv3.Event) {
	in := make([]event, len(evs))
	for i, ev := range evs {
		in[i] = event{Delete: ev.Type == clientv3.EventTypeDelete, Key: string(ev.Kv.Key), Value: ev.Kv.Value, ModRev: ev.Kv.ModRevision, Lease: ev.Kv.Lease}
	}
	n.mu.Lock()
	c := n.st.apply(in)
	n.mu.Unlock()
	n.perform(ctx, c, false)
}

// perform is the edge of the reducer: it calls the handlers for what
// changed, queues the status write and saves the state. A ban read by a
// snapshot (at start, after a compaction) lasts only what remains of its
// lease; a watched one was just published and lasts its duration, and its
// key's deletion (the lease's end, or an operator's) lifts it.
func (n *Node) perform(ctx context.Context, c changes, snapshot bool) {
	// Ignored entries are logged at most once a minute, with their count
	// since: a flood of keys over a bound is one event per key.
	n.ignored += c.Ignored
	n.malformed += c.Malformed
	if (n.ignored > 0 || n.malformed > 0) && time.Since(n.ignoredLogged) >= time.Minute {
		n.log.Warn("cluster entries ignored", "over_bounds", n.ignored, "malformed", n.malformed,
			"max_services_per_protocol", MaxServicesPerProtocol, "max_protocols", MaxProtocols, "max_nodes", MaxNodes, "max_bans", MaxBans)
		n.ignored, n.malformed, n.ignoredLogged = 0, 0, time.Now()
	}
	if c.Config != nil && n.h.Config != nil {
		status := "ok"
		if err := n.h.Config(c.Config); err != nil {
			status = "rejected: " + err.Error()
			n.log.Error("configuration from etcd rejected, the running configuration keeps serving", "err", err)
		}
		n.reportStatus(status)
	}
	if c.Services && n.h.Services != nil {
		n.h.Services(n.servicesSnapshot())
	}
	if c.Nodes && n.h.Nodes != nil {
		n.h.Nodes(n.Nodes())
	}
	n.performBans(ctx, c.Bans, snapshot)
	if c.Services || c.Config != nil {
		n.saveState()
	}
}

func (n *Node) performBans(ctx context.Context, bans []banChange, snapshot bool) {
	remaining := map[int64]time.Duration{} // lease → what remains of it (snapshot only)
	for _, b := range bans {
		switch {
		case b.Unban:
			if n.h.Unban != nil {
				n.h.Unban(b.IP)
			}
			continue
		case n.h.Ban == nil:
			continue
		}
		d := b.D
		if snapshot && b.Lease != 0 {
			left, ok := remaining[b.Lease]
			if !ok && len(remaining) >= maxLeaseLookups {
				left, ok = b.D, true // its key's deletion still lifts it
			}
			if !ok {
				left = n.leaseLeft(ctx, clientv3.LeaseID(b.Lease), b.D)
				remaining[b.Lease] = left
			}
			d = min(d, left)
		}
		if d > 0 {
			n.h.Ban(b.IP, d)
		}
	}
}

// leaseLeft is what remains of lease, 0 when it has ended; d when etcd
// cannot say (the key's deletion will still lift the ban).
func (n *Node) leaseLeft(ctx context.Context, lease clientv3.LeaseID, d time.Duration) time.Duration {
	lctx, cancel := context.WithTimeout(ctx, n.opt.LeaseTTL/3)
	defer cancel()
	r, err := n.cli.TimeToLive(lctx, lease)
	if err != nil {
		return d
	}
	return max(time.Duration(r.TTL)*time.Second, 0)
}

func (n *Node) servicesSnapshot() map[string][]Service {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[string][]Service, len(n.st.services))
	for proto, m := range n.st.services {
		for _, s := range m {
			out[proto] = append(out[proto], s)
		}
		sort.Slice(out[proto], func(i, j int) bool { return out[proto][i].Instance < out[proto][j].Instance })
	}
	return out
}

// reportStatus queues status for StatusPrefix/<node>, replacing one not
// yet written: only the latest matters, and the watch loop never waits on
// the write. status is cut to MaxStatusBytes.
func (n *Node) reportStatus(status string) {
	status = boundStatus(status)
	n.lastStatus.Store(&status)
	for {
		select {
		case n.status <- status:
			return
		default:
		}
		select {
		case <-n.status:
		default:
		}
	}
}

func (n *Node) writeStatus(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-n.status:
			lease := clientv3.LeaseID(n.statusLease.Load())
			if lease == 0 {
				continue // started from the state file: written once a lease is granted
			}
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if _, err := n.cli.Put(wctx, StatusPrefix+n.opt.NodeID, s, clientv3.WithLease(lease)); err != nil && ctx.Err() == nil {
				// A lapsed lease: the node registers again under a new
				// one, which writes the last status again.
				n.log.Warn("could not report the configuration status to etcd", "err", err)
			}
			cancel()
		}
	}
}

// boundStatus is s cut to MaxStatusBytes, at a character boundary, with a
// trailing "…" when cut.
func boundStatus(s string) string {
	if len(s) <= MaxStatusBytes {
		return s
	}
	const mark = "…"
	cut := MaxStatusBytes - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// errCompacted ends a session whose watch cannot resume: etcd compacted the
// revisions it would resume from.
var errCompacted = errors.New("watch compacted")

// run keeps the node in session with etcd, reconnecting with back-off.
func (n *Node) run(ctx context.Context, connected bool) {
	for ctx.Err() == nil {
		wasConnected, err := n.session(ctx, connected)
		connected = false
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errCompacted) {
			continue // still in touch: read everything at once
		}
		n.setConnected(false, err)
		b := nextBackoff(time.Duration(n.backoff.Load()), wasConnected, n.opt.LeaseTTL)
		n.backoff.Store(int64(b))
		// Jitter: nodes that lost etcd together do not come back together.
		wait := b/2 + rand.N(b/2+1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// nextBackoff is the wait after a session that ended: the minimum again
// after a session that connected, else twice the last, at most
// min(maxBackoff, leaseTTL/3) so that a node reconnects before its lease
// lapses.
func nextBackoff(last time.Duration, connected bool, leaseTTL time.Duration) time.Duration {
	if connected {
		return minBackoff
	}
	return max(min(2*last, maxBackoff, leaseTTL/3), minBackoff)
}

// session is one connected period: the lease kept alive, the watches open
// from their last revision. It returns whether it connected, and why it
// ended. etcd is declared lost when neither a watch response nor an
// answer to a progress request came for LeaseTTL.
func (n *Node) session(ctx context.Context, connected bool) (bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if !connected {
		cctx, ccancel := context.WithTimeout(ctx, n.opt.LeaseTTL)
		err := n.connect(cctx)
		ccancel()
		if err != nil {
			return false, err
		}
	}
	ka, err := n.cli.KeepAlive(ctx, n.lease)
	if err != nil {
		return false, err
	}
	// Opening a watch waits for its stream, which waits for etcd: open them
	// aside, so that the loop below declares etcd lost meanwhile too.
	wctx := clientv3.WithRequireLeader(ctx)
	opened := make(chan [2]clientv3.WatchChan, 1)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }() // Watch returns once ctx is done
	wg.Add(1)
	go func() {
		defer wg.Done()
		var chans [2]clientv3.WatchChan
		for i, r := range n.ranges {
			opts := []clientv3.OpOption{clientv3.WithRev(r.rev + 1), clientv3.WithProgressNotify()}
			if r.end != "" {
				opts = append(opts, clientv3.WithRange(r.end))
			}
			chans[i] = n.cli.Watch(wctx, r.key, opts...)
		}
		opened <- chans
	}()
	var chans [2]clientv3.WatchChan
	n.setConnected(true, nil)
	start := time.Now()
	tick := time.NewTicker(n.opt.LeaseTTL / 3)
	defer tick.Stop()
	for {
		var (
			wr clientv3.WatchResponse
			ok bool
			i  int
		)
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case r, open := <-ka:
			if !open || r == nil {
				return true, errors.New("lease keep-alive ended")
			}
			continue
		case chans = <-opened:
			continue
		case <-tick.C:
			if time.Since(start) > n.opt.LeaseTTL && time.Since(n.LastSync()) > n.opt.LeaseTTL {
				return true, fmt.Errorf("etcd did not answer for %v", n.opt.LeaseTTL)
			}
			if chans[0] == nil || time.Since(n.LastSync()) < n.opt.LeaseTTL/3 {
				continue // not open yet, or a response came recently
			}
			pctx, pcancel := context.WithTimeout(wctx, n.opt.LeaseTTL/3)
			err := n.cli.RequestProgress(pctx)
			pcancel()
			if err != nil && ctx.Err() == nil {
				return true, err
			}
			continue
		case wr, ok = <-chans[0]:
		case wr, ok = <-chans[1]:
			i = 1
		}
		if !ok {
			return true, errors.New("watch closed")
		}
		if wr.CompactRevision != 0 {
			// The revisions the watch would resume from are gone: only a
			// full read can tell what changed meanwhile.
			n.needSnapshot = true
			return true, fmt.Errorf("%w at revision %d", errCompacted, wr.CompactRevision)
		}
		if err := wr.Err(); err != nil {
			return true, err // the next session resumes from n.ranges[i].rev
		}
		n.synced()
		if wr.IsProgressNotify() {
			// Every event up to the header's revision has been delivered.
			n.ranges[i].rev = max(n.ranges[i].rev, wr.Header.Revision)
			continue
		}
		if len(wr.Events) > 0 {
			n.ranges[i].rev = max(n.ranges[i].rev, wr.Events[len(wr.Events)-1].Kv.ModRevision)
			n.fold(ctx, wr.Events)
		}
	}
}

// Close deregisters the node (revoking its lease) and stops watching.
func (n *Node) Close() error {
	n.cancel()
	<-n.done
	if n.lease != 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		n.cli.Revoke(ctx, n.lease)
		cancel()
	}
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
