package udp

import (
	"context"
	"fmt"
	"net"
	"runtime"
)

// sockets are the sockets BindSockets bound for one address, as one
// net.PacketConn: the first (its LocalAddr; the one an upgrade hands
// over) and the others beside it. Close closes them all.
type sockets struct {
	*net.UDPConn
	others []*net.UDPConn
}

func (s *sockets) Close() error {
	for _, c := range s.others {
		c.Close()
	}
	return s.UDPConn.Close()
}

// Sockets is every socket of pc (BindSockets's, or Serve's group), the
// first first, or pc alone.
func Sockets(pc net.PacketConn) []net.PacketConn {
	switch c := pc.(type) {
	case *sockets:
		out := []net.PacketConn{c.UDPConn}
		for _, o := range c.others {
			out = append(out, o)
		}
		return out
	case interface{ Sockets() []net.PacketConn }:
		return c.Sockets()
	}
	return []net.PacketConn{pc}
}

// Sockets is every socket of pc as the engine serves it: Sockets(pc), and
// for one socket given alone (socket activation) those Serve joined beside
// it.
func (e *Engine) Sockets(pc net.PacketConn) []net.PacketConn {
	if c, ok := pc.(*net.UDPConn); ok {
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, ln := range e.lns {
			if ln.primary && ln.conn == c {
				out := make([]net.PacketConn, len(ln.group))
				for i, m := range ln.group {
					out[i] = m.conn
				}
				return out
			}
		}
	}
	return Sockets(pc)
}

// udpConns is pcs as UDP sockets; nil when one is not.
func udpConns(pcs []net.PacketConn) (*net.UDPConn, []*net.UDPConn) {
	var out []*net.UDPConn
	for _, pc := range pcs {
		c, ok := pc.(*net.UDPConn)
		if !ok {
			return nil, nil
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out[0], out[1:]
}

// socketCount is how many sockets bind each address.
func (e *Engine) socketCount() int {
	n := e.opt.Sockets
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	if !reusePortOK {
		n = 1
	}
	return min(n, maxSockets)
}

// BindSockets binds addr for Serve: the first socket with Bind
// (SO_REUSEPORT after a probe without it), the others joined beside it,
// all before any is read, so that the kernel's spread of the clients over
// them does not change once datagrams flow (a client moved to another
// socket would become a second flow).
func (e *Engine) BindSockets(ctx context.Context, addr string) (net.PacketConn, error) {
	pc, err := Bind(ctx, addr)
	if err != nil {
		return nil, err
	}
	first, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("not a UDP socket: %s", pc.LocalAddr())
	}
	return &sockets{UDPConn: first, others: e.join(ctx, first)}, nil
}

// join binds the engine's other sockets beside first, as many as it
// allows: none when first has no SO_REUSEPORT (an activated socket, one
// handed over by a binary that did not set it), which then keeps its
// address alone.
func (e *Engine) join(ctx context.Context, first *net.UDPConn) []*net.UDPConn {
	var others []*net.UDPConn
	for range e.socketCount() - 1 {
		lc := ListenConfig()
		c, err := lc.ListenPacket(ctx, "udp", first.LocalAddr().String())
		if err != nil {
			break
		}
		others = append(others, c.(*net.UDPConn))
	}
	return others
}

// Serve serves pc, a server.listen_udp address's sockets (BindSockets's,
// or one socket handed over by an upgrade or passed by socket activation,
// beside which Serve binds the others), until ctx ends or the engine
// closes; then they are closed and their flows end. It closes pc in every
// case. The manager rebinds listen_udp on reload by starting and stopping
// Serve calls.
func (e *Engine) Serve(ctx context.Context, pc net.PacketConn) error {
	var first *net.UDPConn
	var others []*net.UDPConn
	switch c := pc.(type) {
	case *sockets:
		first, others = c.UDPConn, c.others
	case *net.UDPConn:
		first, others = c, e.join(ctx, c)
	case interface{ Sockets() []net.PacketConn }:
		// Every socket of the address, handed over in order by an
		// upgrade: the group, and where the kernel sends each client,
		// stays as it was (none is joined to it).
		if first, others = udpConns(c.Sockets()); first == nil {
			pc.Close()
			return fmt.Errorf("udp: Serve: a %T holds a socket that is not UDP", pc)
		}
	default:
		pc.Close()
		return fmt.Errorf("udp: Serve: a %T is not a UDP socket", pc)
	}
	primary, err := e.start(first, others)
	if err != nil {
		return nil // the engine closed
	}
	group := primary.group
	e.opt.Log.Info("protoplex listening", "addr", primary.addr, "transport", "udp", "sockets", len(group))
	stop := context.AfterFunc(ctx, func() { e.stopListener(primary) })
	defer stop()
	for _, ln := range group {
		<-ln.done // until the sockets are closed: ctx, the engine's Close
	}
	e.stopListener(primary)
	return nil
}

// start runs a listener on first and on each of others, a group whose
// primary it returns; net.ErrClosed, and they are closed, when the engine
// is.
func (e *Engine) start(first *net.UDPConn, others []*net.UDPConn) (*listener, error) {
	addr := first.LocalAddr().String()
	group := []*listener{e.newListener(first, addr, true)}
	for _, c := range others {
		group = append(group, e.newListener(c, addr, false))
	}
	group[0].group = group
	for _, ln := range group {
		ln.head = group[0]
	}
	// Each socket goes to a loop, when there are loops, before the
	// listeners are published: stop and post read ln.drv unlocked.
	var loops []Loop
	var release func()
	if e.opt.Loops != nil {
		loops, release = e.opt.Loops()
	}
	for i, ln := range group {
		if len(loops) > 0 && ln.onLoop(loops[i%len(loops)]) {
			group[0].loopsLeft.Add(1)
		}
	}
	if group[0].loopsLeft.Load() > 0 {
		group[0].releaseLoops = release
	} else if release != nil {
		release() // no socket took a loop
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		for _, ln := range group {
			ln.leaveLoop()
			ln.conn.Close()
		}
		if r := group[0].releaseLoops; r != nil {
			r()
		}
		return nil, net.ErrClosed
	}
	e.lns = append(e.lns, group...)
	if e.grown != nil {
		close(e.grown)
		e.grown = nil
	}
	e.wg.Add(len(group))
	held := e.holding
	if held {
		e.held = append(e.held, group...)
	}
	e.mu.Unlock()
	if !held {
		for _, ln := range group {
			ln.begin()
		}
	}
	return group[0], nil
}

// newListener is one socket of an address and its flow table, not yet
// running.
func (e *Engine) newListener(c *net.UDPConn, addr string, primary bool) *listener {
	// A larger receive buffer absorbs bursts while the owner forwards (the
	// kernel caps it at net.core.rmem_max).
	_ = c.SetReadBuffer(listenerBuffer)
	return &listener{e: e, conn: c, addr: addr, primary: primary, t: newFlowTable(e.sources, &e.count, &e.pending), done: make(chan struct{})}
}
