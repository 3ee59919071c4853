package protoplex

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// targetSet is a protocol's list of backend targets, tried round-robin; a
// target whose dial fails is skipped for a back-off period and the next one
// is tried within the same dial budget.
type targetSet struct {
	protocol string
	targets  []*target
	next     atomic.Uint64
	dialer   net.Dialer
	obs      dialObserverFunc

	created atomic.Int64
}

type dialObserverFunc func(target string, d time.Duration, err error)

type target struct {
	addr      string
	downUntil atomic.Int64 // unix nanos; 0 = up
	failures  atomic.Int32
	active    atomic.Int64
}

// parseTargetList splits "a:1,b:2" into validated host:port targets.
func parseTargetList(spec string) ([]string, error) {
	var out []string
	for _, t := range strings.Split(spec, ",") {
		t = strings.TrimSpace(t)
		if t == "" {
			continue
		}
		host, port, err := net.SplitHostPort(t)
		if err != nil || host == "" {
			return nil, fmt.Errorf("target %q: want host:port", t)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("target %q: invalid port %q", t, port)
		}
		out = append(out, t)
	}
	if len(out) == 0 {
		return nil, errors.New("no target")
	}
	return out, nil
}

func newTargetSet(protocol, spec string, obs dialObserverFunc) (*targetSet, error) {
	addrs, err := parseTargetList(spec)
	if err != nil {
		return nil, err
	}
	// No TCP keepalive towards backends: they are near, and the three
	// setsockopt calls it costs per dial are measurable per connection.
	s := &targetSet{protocol: protocol, obs: obs, dialer: net.Dialer{KeepAlive: -1}}
	for _, a := range addrs {
		s.targets = append(s.targets, &target{addr: a})
	}
	return s, nil
}

// dial connects to the next healthy target, failing over to the others
// within ctx's deadline. done must be called when the connection ends.
func (s *targetSet) dial(ctx context.Context) (net.Conn, string, func(), error) {
	n := len(s.targets)
	start := int(s.next.Add(1)-1) % n
	now := time.Now().UnixNano()
	var lastErr error
	// First pass skips targets marked down; if every target is down, try
	// them all anyway rather than fail without a dial.
	for pass := 0; pass < 2; pass++ {
		for i := 0; i < n; i++ {
			t := s.targets[(start+i)%n]
			if pass == 0 && t.downUntil.Load() > now {
				continue
			}
			begin := time.Now()
			c, err := s.dialer.DialContext(ctx, "tcp", t.addr)
			if s.obs != nil {
				s.obs(t.addr, time.Since(begin), err)
			}
			if err == nil {
				t.failures.Store(0)
				t.downUntil.Store(0)
				t.active.Add(1)
				s.created.Add(1)
				return c, t.addr, t.release, nil
			}
			lastErr = err
			f := t.failures.Add(1)
			backoff := time.Second << min(f-1, 5) // 1s … 32s
			t.downUntil.Store(time.Now().Add(backoff).UnixNano())
			if ctx.Err() != nil {
				return nil, "", nil, lastErr
			}
		}
	}
	return nil, "", nil, lastErr
}

func (t *target) release() { t.active.Add(-1) }
