package evloop

import "sync"

// Shared is one manager's plane: started by the first listener that
// acquires it, stopped when the last one releases it after a drain. The
// zero value with Env set is ready to use.
type Shared struct {
	Env Env

	mu    sync.Mutex
	p     *Plane
	users int
}

// Acquire returns the plane, starting n loops on first use; nil when the
// loops cannot run here (the caller serves with goroutines).
func (s *Shared) Acquire(n int) *Plane {
	if !Supported {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p == nil {
		p, err := New(s.Env, n)
		if err != nil {
			s.Env.Log.Warn("event loops unavailable, serving with a goroutine per connection", "err", err)
			return nil
		}
		s.p = p
	}
	s.users++
	return s.p
}

// Release gives back one Acquire; with stop, the last user also stops the
// loops (its connections are drained). Without, they keep serving the
// connections other listeners left them until Stop.
func (s *Shared) Release(stop bool) {
	s.mu.Lock()
	if s.users > 0 {
		s.users--
	}
	s.mu.Unlock()
	if stop {
		s.Stop()
	}
}

// Stop stops the loops if no listener uses them.
func (s *Shared) Stop() {
	s.mu.Lock()
	var p *Plane
	if s.users == 0 {
		p, s.p = s.p, nil
	}
	s.mu.Unlock()
	if p != nil {
		p.Close()
	}
}

// Plane returns the running plane; nil when no listener uses the loops.
func (s *Shared) Plane() *Plane {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.p
}
