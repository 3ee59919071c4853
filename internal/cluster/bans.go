package cluster

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// banLeases shares one lease among the bans a node publishes that end in
// the same second: a flood of bans costs one lease grant per second, not
// one per ban, and etcd keeps fewer leases.
type banLeases struct {
	mu     sync.Mutex
	leases map[int64]clientv3.LeaseID // expiry (unix seconds) → lease
}

const (
	// maxPendingBans bounds the bans waiting to be published: a flood of
	// bans while etcd is slow or away is dropped past it (logged), never
	// queued without limit.
	maxPendingBans = 4096
	// maxLeaseLookups bounds the lease look-ups of one full read; bans
	// past it get their whole duration, and their key's deletion still
	// lifts them.
	maxLeaseLookups = 1024
)

type published struct {
	ip netip.Addr
	d  time.Duration
}

// ErrBanQueueFull is PublishBan's error when maxPendingBans bans already
// wait to be published.
var ErrBanQueueFull = errors.New("cluster: too many bans waiting to be published")

// PublishBan shares a ban with every node; it ends with its lease, and
// deleting its key lifts it everywhere. It does not wait for etcd (the
// caller may be the data plane): the ban is queued, and written by the
// node's publisher.
func (n *Node) PublishBan(ip netip.Addr, d time.Duration) error {
	select {
	case n.bansOut <- published{ip, d}:
		return nil
	default:
		return ErrBanQueueFull
	}
}

func (n *Node) publishBans(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case b := <-n.bansOut:
			if err := n.publish(ctx, b.ip, b.d); err != nil && ctx.Err() == nil {
				n.log.Warn("could not share ban", "source", b.ip.String(), "err", err)
			}
		}
	}
}

func (n *Node) publish(ctx context.Context, ip netip.Addr, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ttl := max(int64((d+time.Second-1)/time.Second), 1)
	lease, err := n.banLease.get(ctx, n.cli, ttl, time.Now())
	if err != nil {
		return err
	}
	_, err = n.cli.Put(ctx, BansPrefix+ip.String(), d.String(), clientv3.WithLease(lease))
	return err
}

func (b *banLeases) get(ctx context.Context, cli *clientv3.Client, ttl int64, now time.Time) (clientv3.LeaseID, error) {
	expiry := now.Unix() + ttl
	b.mu.Lock()
	if b.leases == nil {
		b.leases = map[int64]clientv3.LeaseID{}
	}
	for e := range b.leases {
		if e <= now.Unix() {
			delete(b.leases, e)
		}
	}
	id, ok := b.leases[expiry]
	b.mu.Unlock()
	if ok {
		return id, nil
	}
	g, err := cli.Grant(ctx, ttl)
	if err != nil {
		return 0, err
	}
	b.mu.Lock()
	b.leases[expiry] = g.ID
	b.mu.Unlock()
	return g.ID, nil
}
