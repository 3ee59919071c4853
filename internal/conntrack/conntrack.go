// Package conntrack tracks a manager's live connections, with their backend
// once dialed, so a drain can wait for them and close both ends of the rest:
// closing only the client would leave a connection whose client half-closed
// waiting on a silent backend forever; and it cancels a backend dial in
// progress, which would otherwise hold the drain past its deadline for up
// to the dial timeout.
package conntrack

import (
	"context"
	"io"
	"net"
	"sync"
	"time"
)

// Set is the live connections. The zero value is not usable; use New.
type Set struct {
	mu     sync.Mutex
	m      map[io.Closer]*entry // by client: a net.Conn, or an event loop's connection
	byID   map[uint64]io.Closer
	lastID uint64
	empty  chan struct{} // closed while the set is empty
}

type entry struct {
	backend io.Closer          // nil before the dial
	dialing context.CancelFunc // set while the backend is being dialed (calling it after the dial is harmless)
	id      uint64
	client  net.Addr // nil when c has no RemoteAddr
	since   time.Time
}

// Info describes one live connection (List).
type Info struct {
	ID     uint64 // unique in the process, never reused
	Client net.Addr
	Since  time.Time
}

// New returns an empty set.
func New() *Set {
	s := &Set{m: map[io.Closer]*entry{}, byID: map[uint64]io.Closer{}, empty: make(chan struct{})}
	close(s.empty)
	return s
}

// Add tracks c unless limit connections are tracked already; it reports
// whether c was added. It gives c the next id, and records its address if
// c has a RemoteAddr method (called here, on the caller's goroutine, once).
func (s *Set) Add(c io.Closer, limit int) bool {
	var client net.Addr
	if ra, ok := c.(interface{ RemoteAddr() net.Addr }); ok {
		client = ra.RemoteAddr()
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) >= limit {
		return false
	}
	if len(s.m) == 0 {
		s.empty = make(chan struct{})
	}
	s.lastID++
	s.m[c] = &entry{id: s.lastID, client: client, since: now}
	s.byID[s.lastID] = c
	return true
}

// List returns at most n live connections, the oldest first. It visits
// every tracked connection (at most max_connections), keeping n.
func (s *Set) List(n int) []Info {
	var out []Info
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.m {
		if n <= 0 || (len(out) == n && e.id > out[n-1].ID) {
			continue
		}
		i := len(out)
		for i > 0 && e.id < out[i-1].ID {
			i--
		}
		if len(out) < n {
			out = append(out, Info{})
		}
		copy(out[i+1:], out[i:len(out)-1])
		out[i] = Info{ID: e.id, Client: e.client, Since: e.since}
	}
	return out
}

// Close closes the connection id, its backend and a dial in progress, as
// CloseAll does for all of them; false when no live connection has id.
func (s *Set) Close(id uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.byID[id]
	if !ok {
		return false
	}
	closeEntry(c, s.m[c])
	return true
}

// Dialing records cancel as the way to abort the dial of c's backend:
// CloseAll calls it until Attach records the backend. When c is no longer
// tracked (CloseAll closed it already) cancel is called at once.
func (s *Set) Dialing(c io.Closer, cancel context.CancelFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[c]; ok {
		e.dialing = cancel
		return
	}
	cancel()
}

// Attach records c's backend. A CloseAll that closed c just before is no
// problem: the copy then fails at once and closes the backend itself.
func (s *Set) Attach(c, backend io.Closer) {
	s.mu.Lock()
	if e, ok := s.m[c]; ok {
		e.backend, e.dialing = backend, nil
	}
	s.mu.Unlock()
}

// Remove stops tracking c.
func (s *Set) Remove(c io.Closer) {
	s.mu.Lock()
	if e, ok := s.m[c]; ok {
		delete(s.m, c)
		delete(s.byID, e.id)
		if len(s.m) == 0 {
			close(s.empty)
		}
	}
	s.mu.Unlock()
}

// Len is the number of live connections.
func (s *Set) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// CloseAll closes every tracked connection and its backend, and cancels the
// backend dials in progress.
func (s *Set) CloseAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c, e := range s.m {
		closeEntry(c, e)
	}
}

func closeEntry(c io.Closer, e *entry) {
	c.Close()
	if e.dialing != nil {
		e.dialing()
	}
	if e.backend != nil {
		e.backend.Close()
	}
}

// Wait returns nil once the set is empty, or ctx's error if it ends first.
func (s *Set) Wait(ctx context.Context) error {
	for {
		s.mu.Lock()
		empty := s.empty
		s.mu.Unlock()
		select {
		case <-empty:
			// Re-check: a connection may have been added since.
			if s.Len() == 0 {
				return nil
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
