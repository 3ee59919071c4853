package udp

import (
	"cmp"
	"context"
	"log/slog"
	"strings"
	"sync"
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
// once per snapshot and idle timeout.
func Follow(snapshot func() *routing.Table, server func() Settings, st *metrics.UDP) (func() *Table, func() Settings) {
	var mu sync.Mutex
	var last *routing.Table
	var lastIdle time.Duration
	var table *Table
	tables := func() *Table {
		rt, idle := snapshot(), server().IdleTimeout
		mu.Lock()
		defer mu.Unlock()
		if rt != last || idle != lastIdle || table == nil {
			last, lastIdle, table = rt, idle, TableOf(rt, idle, st)
		}
		return table
	}
	return tables, server
}

// TableOf is the UDP table of a routing snapshot: the routes on UDP with
// host:port targets (in-process handlers and unix: targets take no
// datagrams). A flow's idle timeout is its route's udp_idle_timeout, else
// idle (server.udp_idle_timeout), else the protocol's default.
func TableOf(rt *routing.Table, idle time.Duration, st *metrics.UDP) *Table {
	var routes []Route
	if rt != nil {
		for i, e := range rt.Entries {
			p := e.Proto
			spec := p.Spec()
			if spec.Datagram == nil || p.Handler != nil {
				continue
			}
			r := Route{Index: i, Name: p.Name, Label: e.Label, Detect: spec.Datagram, Inspect: spec.InspectDatagram,
				Conditions: p.Conditions(), Priority: p.Priority, Fallback: p.Fallback,
				IdleTimeout: cmp.Or(p.UDPIdleTimeout, idle, IdleTimeoutOf(p.Name))}
			if targets, err := upstream.ParseTargets([]string{p.Target}); err == nil {
				for _, t := range targets {
					if !strings.HasPrefix(t.Addr, upstream.UnixPrefix) {
						r.Targets = append(r.Targets, t.Addr)
					}
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
		r.state.responses = ResponsesOf(r.Name, rt.Entries[r.Index].Proto.UDPResponses)
	}
	return t
}

// ResponsesOf is how many replies end a flow of protocol name whose
// udp_responses is n: n when set, else 1 for DNS (a query, its answer);
// 0 is no limit.
func ResponsesOf(name string, n int) int {
	switch {
	case n > 0:
		return n
	case n < 0:
		return 0
	}
	if d, ok := protocols.Describe(name); ok && d.Name == "DNS" {
		return 1
	}
	return 0
}

// IdleTimeoutOf is a protocol's default flow idle timeout.
func IdleTimeoutOf(name string) time.Duration {
	if d, ok := protocols.Describe(name); ok && d.Name == "DNS" {
		return DNSIdleTimeout
	}
	return DefaultIdleTimeout
}
