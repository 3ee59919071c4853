// Package listen keeps the sets of listening sockets of a manager: one serve
// loop per address, and a two-phase rebind for reloads (Prepare binds the new
// addresses while the reload is checked, Commit starts them before it stops
// the removed ones), so a reload that cannot bind changes nothing and no
// established stream is dropped. A Set's address is TCP "host:port" or a
// Unix stream socket "unix:/path" (unix.go); a PacketSet's is UDP
// "host:port" (server.listen_udp, udp.go). A socket bound already (socket
// activation) is handed to a set with Adopt.
package listen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
)

// ErrRemoved is the cancel cause of a serve loop whose address a reload
// removed: that loop stops accepting without draining, the other addresses
// keep serving the connections.
var ErrRemoved = errors.New("protoplex: listener removed")

// TCP opens a TCP listener that leaves keepalive to the caller (net.Listen
// would turn it on for every accepted connection, at the cost of four
// syscalls each).
func TCP(ctx context.Context, addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("protoplex: listen %s: %w", addr, err)
	}
	return ln, nil
}

// ServeFunc serves ln until ctx ends; it closes ln.
type ServeFunc func(ctx context.Context, ln net.Listener) error

// Group is the sockets of one kind a manager listens on, by configured
// address. Its methods are safe for concurrent use.
type Group[L io.Closer] struct {
	bind    func(ctx context.Context, addr string) (L, error)
	inherit func(in *Inherited, addr string) (L, bool, error) // the socket handed over for addr
	addr    func(L) net.Addr
	key     string // the configuration key, in errors
	serve   func(ctx context.Context, ln L) error
	onErr   func(addr string, err error)

	mu      sync.Mutex
	ctx     context.Context
	running map[string]*loop[L]
	order   []string     // addresses of the last Commit, as given
	pending map[string]L // bound by Prepare or given to Adopt, for the next Commit
	in      *Inherited   // sockets taken instead of bound (an upgrade's)
	wg      sync.WaitGroup
}

// Set is the stream listeners (server.listen); PacketSet the UDP sockets
// (server.listen_udp).
type (
	Set       = Group[net.Listener]
	PacketSet = Group[net.PacketConn]
)

type loop[L io.Closer] struct {
	ln     L
	cancel context.CancelCauseFunc
}

// NewSet returns an empty set of stream listeners whose loops run serve;
// onErr hears a loop that ended with an error.
func NewSet(serve ServeFunc, onErr func(addr string, err error)) *Set {
	return &Set{bind: Open, inherit: (*Inherited).listener, addr: net.Listener.Addr, key: "server.listen",
		serve: serve, onErr: onErr, running: map[string]*loop[net.Listener]{}}
}

// NewPacketSet returns an empty set of UDP sockets that bind (nil: UDP)
// binds and whose loops run serve; onErr hears a loop that ended with an
// error.
func NewPacketSet(bind func(ctx context.Context, addr string) (net.PacketConn, error), serve func(ctx context.Context, pc net.PacketConn) error, onErr func(addr string, err error)) *PacketSet {
	if bind == nil {
		bind = UDP
	}
	return &PacketSet{bind: bind, inherit: (*Inherited).packetConn, addr: net.PacketConn.LocalAddr, key: "server.listen_udp",
		serve: serve, onErr: onErr, running: map[string]*loop[net.PacketConn]{}}
}

// Adopt gives the set ln, a socket bound already (socket activation), as
// the socket of addr: the next Prepare or Start that lists addr serves it
// instead of binding addr; one that does not closes it.
func (s *Group[L]) Adopt(addr string, ln L) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.pending[addr]; ok {
		old.Close()
	}
	if s.pending == nil {
		s.pending = map[string]L{}
	}
	s.pending[addr] = ln
}

// Prepare binds the addresses of addrs that are not served yet and keeps
// them for Commit. When one cannot be bound nothing stays bound and the
// error names it. Listeners an earlier Prepare left are kept when still
// wanted, closed otherwise.
func (s *Group[L]) Prepare(addrs []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := map[string]L{}
	var err error
	for _, a := range addrs {
		if _, ok := s.running[a]; ok {
			continue
		}
		if ln, ok := s.pending[a]; ok {
			kept[a] = ln
			delete(s.pending, a)
			continue
		}
		var ln L
		if ln, err = s.open(a); err != nil {
			break
		}
		kept[a] = ln
	}
	s.releaseLocked()
	if err != nil {
		for _, ln := range kept {
			ln.Close()
		}
		return fmt.Errorf("%s: %w", s.key, err)
	}
	s.pending = kept
	return nil
}

// open takes the socket handed over for a, or binds it.
func (s *Group[L]) open(a string) (L, error) {
	ln, ok, err := s.inherit(s.in, a)
	if !ok {
		return s.bind(context.Background(), a)
	}
	if err != nil {
		return ln, fmt.Errorf("protoplex: listen %s: the socket handed over: %w", a, err)
	}
	return ln, nil
}

// Inherit makes the set take its sockets from in, where in has them,
// instead of binding them.
func (s *Group[L]) Inherit(in *Inherited) {
	s.mu.Lock()
	s.in = in
	s.mu.Unlock()
}

// Listeners calls fn with each address served and its socket.
func (s *Group[L]) Listeners(fn func(addr string, ln L)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.order {
		if l, ok := s.running[a]; ok {
			fn(a, l.ln)
		}
	}
}

// Release closes what Prepare bound for a reload that was rejected.
func (s *Group[L]) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseLocked()
}

func (s *Group[L]) releaseLocked() {
	for _, ln := range s.pending {
		ln.Close()
	}
	s.pending = nil
}

// Start serves addrs under ctx (which ends every loop). It binds them all
// first and serves none when one cannot be bound.
func (s *Group[L]) Start(ctx context.Context, addrs []string) error {
	s.mu.Lock()
	s.ctx = ctx
	s.mu.Unlock()
	if err := s.Prepare(addrs); err != nil {
		return err
	}
	s.Commit(addrs)
	return nil
}

// Commit makes addrs the served set: the listeners Prepare bound (and any
// address it did not see) start serving, then the loops of addresses not in
// addrs stop with ErrRemoved. An address that cannot be bound here is
// reported through onErr and the current loops keep serving.
func (s *Group[L]) Commit(addrs []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx == nil {
		s.releaseLocked() // not started: nothing to serve yet
		return
	}
	for _, a := range addrs {
		if _, ok := s.running[a]; ok {
			continue
		}
		ln, ok := s.pending[a]
		if !ok {
			var err error
			if ln, err = s.open(a); err != nil {
				s.onErr(a, err)
				continue
			}
		}
		delete(s.pending, a)
		s.startLocked(a, ln)
	}
	s.releaseLocked()
	s.order = slices.Clone(addrs)
	for a, l := range s.running {
		if !slices.Contains(addrs, a) {
			l.cancel(ErrRemoved)
			delete(s.running, a)
		}
	}
}

func (s *Group[L]) startLocked(addr string, ln L) {
	ctx, cancel := context.WithCancelCause(s.ctx)
	s.running[addr] = &loop[L]{ln: ln, cancel: cancel}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer cancel(nil)
		if err := s.serve(ctx, ln); err != nil {
			s.onErr(addr, err)
		}
	}()
}

// Addrs returns the bound addresses served now, in configuration order.
func (s *Group[L]) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []net.Addr
	for _, a := range s.order {
		if l, ok := s.running[a]; ok {
			out = append(out, s.addr(l.ln))
		}
	}
	return out
}

// Wait returns when every loop has returned.
func (s *Group[L]) Wait() { s.wg.Wait() }

// listener and packetConn are what a Set and a PacketSet take from in: the
// socket handed over under their role.
func (in *Inherited) listener(addr string) (net.Listener, bool, error) {
	return in.Listener(RoleListen, addr)
}

func (in *Inherited) packetConn(addr string) (net.PacketConn, bool, error) {
	pc, ok, err := in.PacketConn(RoleListenUDP, addr)
	if !ok || err != nil {
		return pc, ok, err
	}
	return in.packetGroup(pc, addr)
}
