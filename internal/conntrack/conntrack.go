// Package conntrack tracks a manager's live connections, with their backend
// once dialed, so a drain can wait for them and close both ends of the rest:
// closing only the client would leave a connection whose client half-closed
// waiting on a silent backend forever.
package conntrack

import (
	"context"
	"net"
	"sync"
)

// Set is the live connections. The zero value is not usable; use New.
type Set struct {
	mu    sync.Mutex
	m     map[net.Conn]net.Conn // client → backend (nil before the dial)
	empty chan struct{}         // closed while the set is empty
}

// New returns an empty set.
func New() *Set {
	s := &Set{m: map[net.Conn]net.Conn{}, empty: make(chan struct{})}
	close(s.empty)
	return s
}

// Add tracks c unless limit connections are tracked already; it reports
// whether c was added.
func (s *Set) Add(c net.Conn, limit int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) >= limit {
		return false
	}
	if len(s.m) == 0 {
		s.empty = make(chan struct{})
	}
	s.m[c] = nil
	return true
}

// Attach records c's backend. A CloseAll that closed c just before is no
// problem: the copy then fails at once and closes the backend itself.
func (s *Set) Attach(c, backend net.Conn) {
	s.mu.Lock()
	if _, ok := s.m[c]; ok {
		s.m[c] = backend
	}
	s.mu.Unlock()
}

// Remove stops tracking c.
func (s *Set) Remove(c net.Conn) {
	s.mu.Lock()
	if _, ok := s.m[c]; ok {
		delete(s.m, c)
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

// CloseAll closes every tracked connection and its backend.
func (s *Set) CloseAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c, backend := range s.m {
		c.Close()
		if backend != nil {
			backend.Close()
		}
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
