package udp

import (
	"cmp"
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/darkit/protoplex/internal/metrics"
	"github.com/darkit/protoplex/internal/routing"
	"github.com/darkit/protoplex/internal/upstream"
	"github.com/darkit/protoplex/protocols"
)

// DNSIdleTimeout is the idle timeout of DNS flows (a query and its
// answer); other protocols' flows get DefaultIdleTimeout.
const DNSIdleTimeout = 10 * time.Second

// MaxResponses bounds a route's udp_responses.
const MaxResponses = 1_000_000

// ForManager is the options of a manager's engine: following its routing
// snapshot and server settings, admitted by its guard, counted in st,
// closed when ctx ends.
func ForManager(ctx context.Context, snapshot func() *routing.Table, server func() Settings, g Admitter, st *metrics.UDP, log *slog.Logger) Options {
	table, settings := Follow(snapshot, server, st)
	return Options{Table: table, Settings: settings, Guard: g, Stats: st, Log: log, Context: ctx}
}

// Follow returns Options.Table and Options.Settings that follow a
// manager's routing snapshot and server settings: the UDP table is built
// once per snapshot and idle timeout. A listener asks for the table at
// each new flow: the answer is one atomic load while nothing changed.
func Follow(snapshot func() *routing.Table, server func() Settings, st *metrics.UDP) (func() *Table, func() Settings) {
	type built struct {
		rt    *routing.Table
		idle  time.Duration
		table *Table
	}
	var last atomic.Pointer[built]
	var mu sync.Mutex // one build at a time
	tables := func() *Table {
		rt, idle := snapshot(), server().IdleTimeout
		if b := last.Load(); b != nil && b.rt == rt && b.idle == idle {
			return b.table
		}
		mu.Lock()
		defer mu.Unlock()
		if b := last.Load(); b != nil && b.rt == rt && b.idle == idle {
			return b.table
		}
		b := &built{rt, idle, TableOf(rt, idle, st)}
		last.Store(b)
		return b.table
	}
	return tables, server
}

// TableOf is the UDP table of a routing snapshot: the routes on UDP with
// host:port targets (in-process handlers and unix: targets take no
// datagrams). A route's flows take its entry's backend set, the one its
// TCP connections use: one parse of the targets (routing.Build reports its
// errors), one balance and back-off state. A flow's idle timeout is its
// route's udp_idle_timeout, else idle (server.udp_idle_timeout), else the
// protocol's default.
func TableOf(rt *routing.Table, idle time.Duration, st *metrics.UDP) *Table {
	var routes []Route
	if rt != nil {
		for i, e := range rt.Entries {
			p := e.Proto
			spec := p.Spec()
			if spec.Datagram == nil || p.Handler != nil || e.Backend == nil {
				continue
			}
			r := Route{Index: i, Name: p.Name, Label: e.Label, Detect: spec.Datagram, Inspect: spec.InspectDatagram,
				Conditions: p.Conditions(), Priority: p.Priority, Fallback: p.Fallback, Specificity: spec.Specificity,
				IdleTimeout: cmp.Or(p.UDPIdleTimeout, idle, IdleTimeoutOf(p.Name))}
			for _, t := range e.Backend.Status() {
				if !strings.HasPrefix(t.Addr, upstream.UnixPrefix) {
					r.Targets = append(r.Targets, t.Addr)
				}
			}
			if len(r.Targets) == 0 {
				continue
			}
			routes = append(routes, r)
		}
	}
	t := NewTable(routes, st)
	for _, r := range t.Routes() {
		e := rt.Entries[r.Index]
		r.state.set = e.Backend
		r.state.responses = ResponsesOf(r.Name, e.Proto.UDPResponses)
		r.state.pool = r.state.responses == 1 && isDNS(r.Name)
	}
	return t
}

// ResponsesOf is how many replies per datagram sent end a flow of
// protocol name whose udp_responses is n: n when set, else 1 for DNS (a query, its answer);
// 0 is no limit.
func ResponsesOf(name string, n int) int {
	switch {
	case n > 0:
		return n
	case n < 0:
		return 0
	}
	if isDNS(name) {
		return 1
	}
	return 0
}

// isDNS reports whether protocol name is DNS (a route's name is its
// protocol's, or an alias of it).
func isDNS(name string) bool {
	d, ok := protocols.Describe(name)
	return ok && d.Name == "DNS"
}

// IdleTimeoutOf is a protocol's default flow idle timeout.
func IdleTimeoutOf(name string) time.Duration {
	if isDNS(name) {
		return DNSIdleTimeout
	}
	return DefaultIdleTimeout
}
