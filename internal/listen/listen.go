// Package listen keeps the set of listening sockets of a manager: one serve
// loop per address, and a two-phase rebind for reloads (Prepare binds the new
// addresses while the reload is checked, Commit starts them before it stops
// the removed ones), so a reload that cannot bind changes nothing and no
// established stream is dropped. An address is TCP "host:port" or a Unix
// stream socket "unix:/path" (unix.go).
package listen

import (
	"context"
	"errors"
	"fmt"
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

// Set is the listeners of one manager. Its methods are safe for concurrent
// use.
type Set struct {
	serve ServeFunc
	onErr func(addr string, err error)

	mu      sync.Mutex
	ctx     context.Context
	running map[string]*loop
	order   []string                // addresses of the last Commit, as given
	pending map[string]net.Listener // bound by Prepare, for the next Commit
	in      *Inherited              // sockets taken instead of bound (an upgrade's)
	wg      sync.WaitGroup
}

type loop struct {
	ln     net.Listener
	cancel context.CancelCauseFunc
}

// NewSet returns an empty set whose loops run serve; onErr hears a loop
// that ended with an error.
func NewSet(serve ServeFunc, onErr func(addr string, err error)) *Set {
	return &Set{serve: serve, onErr: onErr, running: map[string]*loop{}}
}

// Prepare binds the addresses of addrs that are not served yet and keeps
// them for Commit. When one cannot be bound nothing stays bound and the
// error names it. Listeners an earlier Prepare left are kept when still
// wanted, closed otherwise.
func (s *Set) Prepare(addrs []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := map[string]net.Listener{}
	var fresh []net.Listener
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
		var ln net.Listener
		if ln, err = s.open(a); err != nil {
			break
		}
		kept[a] = ln
		fresh = append(fresh, ln)
	}
	s.releaseLocked()
	if err != nil {
		for _, ln := range kept {
			ln.Close()
		}
		return fmt.Errorf("server.listen: %w", err)
	}
	s.pending = kept
	return nil
}

// open takes the listener handed over for a, or binds it.
func (s *Set) open(a string) (net.Listener, error) {
	ln, ok, err := s.in.Listener(RoleListen, a)
	if !ok {
		return Open(context.Background(), a)
	}
	if err != nil {
		return nil, fmt.Errorf("protoplex: listen %s: the socket handed over: %w", a, err)
	}
	return ln, nil
}

// Inherit makes the set take its listeners from in, where in has them,
// instead of binding them.
func (s *Set) Inherit(in *Inherited) {
	s.mu.Lock()
	s.in = in
	s.mu.Unlock()
}

// Listeners calls fn with each address served and its listener.
func (s *Set) Listeners(fn func(addr string, ln net.Listener)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.order {
		if l, ok := s.running[a]; ok {
			fn(a, l.ln)
		}
	}
}

// Release closes what Prepare bound for a reload that was rejected.
func (s *Set) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseLocked()
}

func (s *Set) releaseLocked() {
	for _, ln := range s.pending {
		ln.Close()
	}
	s.pending = nil
}

// Start serves addrs under ctx (which ends every loop). It binds them all
// first and serves none when one cannot be bound.
func (s *Set) Start(ctx context.Context, addrs []string) error {
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
func (s *Set) Commit(addrs []string) {
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

func (s *Set) startLocked(addr string, ln net.Listener) {
	ctx, cancel := context.WithCancelCause(s.ctx)
	s.running[addr] = &loop{ln: ln, cancel: cancel}
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
func (s *Set) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []net.Addr
	for _, a := range s.order {
		if l, ok := s.running[a]; ok {
			out = append(out, l.ln.Addr())
		}
	}
	return out
}

// Wait returns when every loop has returned.
func (s *Set) Wait() { s.wg.Wait() }
