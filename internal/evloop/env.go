// Package evloop is the event-driven data plane: per-core epoll loops that
// own a connection from accept to close — the first reads, identification,
// the non-blocking backend dial, the replay and the forwarding — so a
// forwarded connection costs no goroutine and no stack. It makes the same
// decisions, in the same order, as the manager's goroutine path (conn.go in
// the root package): guard, PROXY in, identify, route, dial, forward; each
// step counts and logs through the same collectors.
//
// In-process handlers, and backend dials the loop cannot make without
// blocking (host names, source addresses, transparent mode), leave the loop
// for a goroutine: a handler gets the connection as a net.Conn, a dial
// hands its socket back to the loop.
//
// The loops run on Linux; elsewhere Supported is false and the manager
// keeps the goroutine path.
package evloop

import (
	"context"
	"log/slog"
	"time"

	"github.com/darkit/protoplex/internal/bufpool"
	"github.com/darkit/protoplex/internal/config"
	"github.com/darkit/protoplex/internal/conntrack"
	"github.com/darkit/protoplex/internal/guard"
	"github.com/darkit/protoplex/internal/metrics"
	"github.com/darkit/protoplex/internal/routing"
)

// Env is what the loops share with their manager.
type Env struct {
	// Ctx ends dials made off the loop (the manager's lifetime).
	Ctx    context.Context
	Log    *slog.Logger
	CapLog *guard.RateLimitedLogger // max_connections refusals
	Stats  *metrics.Stats
	Guard  *guard.Guard
	Conns  *conntrack.Set
	Bufs   *bufpool.Pools
	// Settings returns the server settings a new connection runs with and
	// the networks trusted to send a PROXY header.
	Settings func() (*config.Server, config.Prefixes)
	// Routing returns the routing snapshot a new identification uses.
	Routing func() *routing.Table
	// SettleWait is identify.Limits.SettleWait.
	SettleWait time.Duration

	// SpliceAfter: a direction that has moved this many bytes goes on
	// through a kernel pipe (splice) instead of the loop's buffer; 0 picks
	// DefaultSpliceAfter, a negative value never splices.
	SpliceAfter int64
	// QuickAck keeps TCP_QUICKACK on for backend sockets; by default it is
	// off before connect, so the handshake's last ACK rides on the replay.
	QuickAck bool

	// Now is the loops' clock (nil: time.Now): identification, dial, idle
	// and back-off deadlines are read from it. A test injects one and
	// wakes the loops (a Connections call does) after moving it.
	Now       func() time.Time
	realClock bool // Now is time.Now: a timer's deadline is a wall-clock instant
}

// DefaultSpliceAfter is where splicing starts paying on loopback (see
// bench/): below it a request and its answer go through the loop's buffer
// in one read and one write per direction.
const DefaultSpliceAfter = 256 << 10

func (e *Env) defaults() {
	if e.SpliceAfter == 0 {
		e.SpliceAfter = DefaultSpliceAfter
	}
	if e.Ctx == nil {
		e.Ctx = context.Background()
	}
	if e.Log == nil {
		e.Log = slog.Default()
	}
	if e.Now == nil {
		e.Now, e.realClock = time.Now, true
	}
}
