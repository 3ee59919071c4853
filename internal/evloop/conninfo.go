package evloop

import "time"

// ConnInfo is one connection as its loop sees it, for a status page: a
// copy taken on the loop, so it may be read anywhere.
type ConnInfo struct {
	ID    uint64 // unique within the plane while it runs
	State string // proxy_header, identifying, connecting, dialing, replaying, forwarding, moving
	// Client is the client's address: a trusted PROXY header's source when
	// one was read; empty on a Unix listener.
	Client string
	// Backend is the IP address and port the backend socket is connected
	// (or connecting) to; empty before a dial and for a Unix socket, which
	// Target names.
	Backend string
	Route   string // the route's label, once identified
	Target  string // the configured target being dialed or forwarded to
	Up      int64  // bytes forwarded client → backend (the replay included)
	Down    int64  // bytes forwarded backend → client
	Age     time.Duration
}

// MaxSnapshot bounds one Connections call, whatever limit it is given.
const MaxSnapshot = 100_000

// Connections is a snapshot of at most limit of the plane's connections
// (and at most MaxSnapshot), the oldest of each loop first; nil when no
// plane runs. Connections handed to an in-process handler have left the
// loops and are not listed.
func (s *Shared) Connections(limit int) []ConnInfo {
	s.mu.Lock()
	p := s.p
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.Connections(limit)
}
