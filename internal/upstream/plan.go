package upstream

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"time"
)

// Plan is one connection's dial: the targets to try, in order. The order is
// the strategy's choice first, then the other targets as configured; the
// targets up when the plan began come first (pass one), those in back-off
// after them (pass two), so a set whose targets are all down still tries
// each once. A target an operator holds (Drain, Maint) is never offered. Every target is offered at most once, and a target failing in
// pass one is not offered again in pass two.
//
// A Plan is a value that allocates nothing for sets of up to 64 targets,
// so an event loop can embed one per connection. Not safe for concurrent
// use; the zero Plan offers no target.
type Plan struct {
	s      *Set
	first  int      // index of the strategy's choice in s.targets
	up     uint64   // bit j: s.targets[j] was up when the plan began (j < 64)
	upMore []uint64 // the same for targets 64 and on, nil for smaller sets
	pass   int      // 0: targets that were up, 1: those in back-off, 2: done
	next   int      // position in the order of the next target to consider
	dgram  bool     // a datagram socket's plan (DatagramPlan)
}

// Attempt is one target to try. At most one of Pooled, Addr and Unix is
// set; none set means the attempt needs the blocking dialer (a host name,
// a source address, transparent mode): call Plan.Dial.
type Attempt struct {
	// Target is the configured address, for logs and metrics.
	Target string
	// Pooled is a connected warm-pool connection: use it, no connect. It
	// belongs to the caller, who closes it if the attempt fails.
	Pooled net.Conn
	// Addr is set when a plain non-blocking connect serves the attempt: an
	// IP literal without a zone, the set without source addresses and not
	// transparent. The caller connects from an unbound socket, so that
	// connect(2) picks a local port unique per 4-tuple (see Set.dial).
	Addr netip.AddrPort
	// Unix is the socket path of a "unix:" target (an AF_UNIX connect).
	Unix string

	t *target
}

// Plan starts a dial for one client connection: it runs the strategy once
// (advancing round-robin and weighted round-robin state) and takes the
// targets' up or down state as of now.
func (s *Set) Plan() Plan {
	now := s.now().UnixNano()
	p := Plan{s: s, first: s.pick(now)}
	if n := len(s.targets); n > 64 {
		p.upMore = make([]uint64, (n-64+63)/64)
	}
	for j, t := range s.targets {
		if !t.isUp(now) {
			continue
		}
		if j < 64 {
			p.up |= 1 << j
		} else {
			p.upMore[(j-64)/64] |= 1 << ((j - 64) % 64)
		}
	}
	return p
}

// DatagramPlan is Plan for a UDP flow: the same order and back-off, but
// its attempts never take a warm-pool connection (those are streams) and
// skip "unix:" targets. An attempt's Addr is set for an IP literal (the
// caller connects a UDP socket itself, a non-blocking connect); else
// Target is a host name the caller resolves, off any event loop. Source
// addresses and transparent mode do not apply to datagrams.
func (s *Set) DatagramPlan() Plan {
	p := s.Plan()
	p.dgram = true
	return p
}

// wasUp reports whether s.targets[j] was up when the plan began.
func (p *Plan) wasUp(j int) bool {
	if j < 64 {
		return p.up&(1<<j) != 0
	}
	return p.upMore[(j-64)/64]&(1<<((j-64)%64)) != 0
}

// Next moves to the next target to try; false when every target was tried
// once. An attempt with Pooled set has taken that connection from the
// target's warm pool.
func (p *Plan) Next() (Attempt, bool) {
	if p.s == nil {
		return Attempt{}, false
	}
	n := len(p.s.targets)
	for ; p.pass < 2; p.pass, p.next = p.pass+1, 0 {
		for p.next < n {
			// Position 0 is the strategy's choice, then the others in order.
			j := p.next
			switch {
			case j == 0:
				j = p.first
			case j <= p.first:
				j--
			}
			p.next++
			if p.s.targets[j].admin.Load() != uint32(Ready) {
				continue // drained or in maintenance: never a new connection
			}
			if p.wasUp(j) == (p.pass == 0) {
				t := p.s.targets[j]
				if p.dgram {
					if t.unix != "" {
						continue
					}
					a := Attempt{Target: t.Addr, t: t}
					if t.ip.Addr().Zone() == "" {
						a.Addr = t.ip
					}
					return a, true
				}
				return p.s.attempt(t), true
			}
		}
	}
	return Attempt{}, false
}

// attempt is how t is tried: a pooled connection if its pool has one, else
// the connect the caller can make itself, if any.
func (s *Set) attempt(t *target) Attempt {
	a := Attempt{Target: t.Addr, t: t}
	if a.Pooled = s.takePooled(t); a.Pooled != nil {
		return a
	}
	switch {
	case t.unix != "":
		a.Unix = t.unix
	case t.ip.IsValid() && t.ip.Addr().Zone() == "" && len(s.opt.Source) == 0 && !s.opt.Transparent:
		a.Addr = t.ip
	}
	return a
}

// Dial makes attempt a with the blocking dialer, within ctx: from client's
// address when the set is transparent, from the next source address when it
// has any (see Set.dial). A Pooled attempt returns its connection. Dial
// writes nothing: the PROXY header is the caller's (ProxyHeader).
func (p *Plan) Dial(ctx context.Context, a Attempt, client net.Addr) (net.Conn, error) {
	if a.Pooled != nil {
		return a.Pooled, nil
	}
	return p.s.dial(ctx, a.t, client)
}

// Done reports the outcome of attempt a (from p.Next), which took d; call
// it once per attempt. DialDone observes it. On success the target is up
// again, counts one more active connection, and the connection counts as
// created (or reused, for Pooled); release is to be called once when the
// connection ends. On failure the target goes into back-off (1 s doubling
// to 32 s) and release is nil; closing a failed Pooled connection is the
// caller's. Done writes nothing to any connection.
func (p *Plan) Done(a Attempt, d time.Duration, err error) (release func()) {
	s, t := p.s, a.t
	if s.opt.DialDone != nil {
		s.opt.DialDone(t.Addr, d, err)
	}
	if err != nil {
		t.dialErrs.Add(1)
		t.fail(s.now())
		return nil
	}
	if !p.dgram {
		// A datagram socket's connect says nothing of the target's health:
		// its replies do (DatagramReplied, DatagramSilent).
		t.recovered(s.now())
	}
	t.active.Add(1)
	t.served.Add(1)
	if a.Pooled != nil {
		s.reused.Add(1)
	} else {
		s.created.Add(1)
	}
	return t.done
}

// ErrNoReply is the error DialDone sees for a datagram target that did not
// answer a flow within the caller's window.
var ErrNoReply = errors.New("no reply to a UDP flow")

// DatagramReplied reports that attempt a's target answered a UDP flow:
// it is up again, and its back-off starts over.
func (s *Set) DatagramReplied(a Attempt) {
	if t := a.t; t != nil && t.failures.Load() != 0 {
		t.recovered(s.now())
	}
}

// DatagramSilent reports that attempt a's target did not answer a UDP
// flow within the caller's window: it goes into back-off as after a
// failed dial (1 s doubling to 32 s), skipped by new flows' plans while
// another target is up, and DialDone sees ErrNoReply.
func (s *Set) DatagramSilent(a Attempt, window time.Duration) {
	if a.t == nil {
		return
	}
	if s.opt.DialDone != nil {
		s.opt.DialDone(a.t.Addr, window, ErrNoReply)
	}
	a.t.fail(s.now())
}

// fail puts t into back-off after one more failure at now.
func (t *target) fail(now time.Time) {
	f := t.failures.Add(1)
	if f == 1 {
		t.since.Store(now.UnixNano())
	}
	t.downUntil.Store(now.Add(backoff(f)).UnixNano())
}

// recovered ends t's back-off at now: it answered.
func (t *target) recovered(now time.Time) {
	if t.failures.Swap(0) > 0 {
		t.since.Store(now.UnixNano())
	}
	t.downUntil.Store(0)
}

// ProxyHeader is the PROXY header the set sends a backend before any client
// byte (send_proxy v1 or v2) for a client connected to local; nil when the
// set sends none.
func (s *Set) ProxyHeader(client, local net.Addr) []byte {
	if s.opt.SendProxy == "" {
		return nil
	}
	return proxyHeader(s.opt.SendProxy, client, local)
}

// SendsProxy reports whether the set sends a PROXY header, so a caller can
// skip looking up the local address when it does not.
func (s *Set) SendsProxy() bool { return s.opt.SendProxy != "" }
