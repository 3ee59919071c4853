package routing

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/darkit/protoplex/internal/guard"
	"github.com/darkit/protoplex/protocols"
)

// DialLogsPerSecond is how many failed dials to one target of one protocol
// are logged per second; the others are counted, and the count is logged
// with the next line written, so a dead backend under load cannot flood
// the log.
const DialLogsPerSecond = 3

// logDials wraps the dial observer (the metrics) of a route's backend set
// so that a failed dial is logged at WARN with protocol, route, target and
// error, at most DialLogsPerSecond lines a second per target.
func logDials(protocol, route string, observe func(string, time.Duration, error), log *slog.Logger) func(string, time.Duration, error) {
	var limited sync.Map // target → *guard.RateLimitedLogger
	return func(target string, d time.Duration, err error) {
		observe(target, d, err)
		if err == nil {
			return
		}
		l, ok := limited.Load(target)
		if !ok {
			l, _ = limited.LoadOrStore(target, guard.NewRateLimitedLogger(
				log.With("protocol", protocol, "route", route, "target", target), DialLogsPerSecond, time.Now))
		}
		l.(*guard.RateLimitedLogger).Warn("backend dial failed", "err", err)
	}
}

// logStates wraps the health observer (the metrics) of a route's backend
// set so that every transition its active health checks see is logged:
// down at WARN, up again at INFO.
func logStates(protocol, route string, observe func(string, bool), log *slog.Logger) func(string, bool) {
	return func(target string, up bool) {
		observe(target, up)
		if up {
			log.Info("backend up: health checks pass", "protocol", protocol, "route", route, "target", target)
		} else {
			log.Warn("backend down: health checks fail", "protocol", protocol, "route", route, "target", target)
		}
	}
}

// Label names a route in logs and metrics: its protocol, followed by its conditions
// when it has any, as in TLS[sni=a.example,*.b.example;alpn=h2]. A list of
// more than labelNames values shows its first ones and how many more
// (TLS[sni=a.example,b.example,c.example,d.example,+99996 more]): every
// access log line and metric series carries the label, and a list may
// hold 100,000 names.
func Label(p *protocols.Protocol) string {
	var conds []string
	for _, c := range []struct {
		key    string
		values []string
	}{{"sni", p.SNI}, {"alpn", p.ALPN}, {"host", p.Hosts}} {
		if len(c.values) > labelNames {
			conds = append(conds, fmt.Sprintf("%s=%s,+%d more", c.key, strings.Join(c.values[:labelNames], ","), len(c.values)-labelNames))
		} else if len(c.values) > 0 {
			conds = append(conds, c.key+"="+strings.Join(c.values, ","))
		}
	}
	if len(conds) == 0 {
		return p.Name
	}
	return p.Name + "[" + strings.Join(conds, ";") + "]"
}

// labelNames is how many values of a condition a Label shows.
const labelNames = 4

// Changes are the routes a plan adds, removes and changes relative to the
// snapshot it was built from. A route is its Entry.Label; each is listed
// as label->target, a changed one with what changed in parentheses. The
// caller that rebinds listeners adds the addresses a reload starts and
// stops serving (ListenChanges).
type Changes struct {
	Added, Removed, Changed []string

	ListenersAdded, ListenersRemoved []string
}

// ListenChanges records the listen addresses in next and not in prev
// (added) and those in prev and not in next (removed), in their order.
func (c *Changes) ListenChanges(prev, next []string) {
	for _, a := range next {
		if !slices.Contains(prev, a) {
			c.ListenersAdded = append(c.ListenersAdded, a)
		}
	}
	for _, a := range prev {
		if !slices.Contains(next, a) {
			c.ListenersRemoved = append(c.ListenersRemoved, a)
		}
	}
}

// Changes compares the plan's snapshot with the one it was built from.
func (plan *Plan) Changes() Changes {
	var c Changes
	var before map[string]*protocols.Protocol
	var oldLabels []string
	if plan.old != nil {
		before, oldLabels = byLabel(plan.old.Entries), entryLabels(plan.old.Entries)
	}
	after := byLabel(plan.next.Entries)
	for _, label := range entryLabels(plan.next.Entries) {
		p := after[label]
		old, ok := before[label]
		if !ok {
			c.Added = append(c.Added, label+"->"+targetOf(p))
		} else if diff := differences(old, p); len(diff) > 0 {
			c.Changed = append(c.Changed, label+"->"+targetOf(p)+" ("+strings.Join(diff, ", ")+")")
		}
	}
	for _, label := range oldLabels {
		if _, ok := after[label]; !ok {
			c.Removed = append(c.Removed, label+"->"+targetOf(before[label]))
		}
	}
	return c
}

// Log writes c at INFO: "configuration applied" with routes_added,
// routes_removed, routes_changed, listeners_added and listeners_removed
// (those not empty), or, when none changed, "configuration applied, no
// route or listener changed".
func (c Changes) Log(log *slog.Logger) {
	var args []any
	for _, l := range []struct {
		key    string
		routes []string
	}{{"routes_added", c.Added}, {"routes_removed", c.Removed}, {"routes_changed", c.Changed},
		{"listeners_added", c.ListenersAdded}, {"listeners_removed", c.ListenersRemoved}} {
		if len(l.routes) > 0 {
			args = append(args, l.key, l.routes)
		}
	}
	if len(args) == 0 {
		log.Info("configuration applied, no route or listener changed")
		return
	}
	log.Info("configuration applied", args...)
}

// labels returns the routes' names (Label, "#n" appended to repeats) in
// configuration order: unique, so each is one route's metrics.
func labels(protos []*protocols.Protocol) []string {
	seen := map[string]int{}
	out := make([]string, 0, len(protos))
	for _, p := range protos {
		label := Label(p)
		seen[label]++
		if n := seen[label]; n > 1 {
			label = fmt.Sprintf("%s#%d", label, n)
		}
		out = append(out, label)
	}
	return out
}

// entryLabels returns the entries' labels in configuration order.
func entryLabels(entries []*Entry) []string {
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = e.Label
	}
	return out
}

// byLabel maps the entries' labels to their protocols.
func byLabel(entries []*Entry) map[string]*protocols.Protocol {
	m := make(map[string]*protocols.Protocol, len(entries))
	for _, e := range entries {
		m[e.Label] = e.Proto
	}
	return m
}

// targetOf is where a route's connections go.
func targetOf(p *protocols.Protocol) string {
	if p.Handler != nil {
		return "in-process"
	}
	return p.Target
}

// differences names the settings of a route that differ between a and b.
func differences(a, b *protocols.Protocol) []string {
	var out []string
	for _, f := range []struct {
		name string
		of   func(*protocols.Protocol) any
	}{
		{"target", func(p *protocols.Protocol) any { return targetOf(p) }},
		{"priority", func(p *protocols.Protocol) any { return p.Priority }},
		{"fallback", func(p *protocols.Protocol) any { return p.Fallback }},
		{"balance", func(p *protocols.Protocol) any { return p.Balance }},
		{"send_proxy", func(p *protocols.Protocol) any { return p.SendProxy }},
		{"source", func(p *protocols.Protocol) any { return strings.Join(p.Source, ",") }},
		{"transparent", func(p *protocols.Protocol) any { return p.Transparent }},
		{"pool", func(p *protocols.Protocol) any { return p.Pool }},
		{"health_check", func(p *protocols.Protocol) any { return p.Health }},
		{"idle_timeout", func(p *protocols.Protocol) any { return p.IdleTimeout }},
		{"match", func(p *protocols.Protocol) any { return matchOf(p) }},
	} {
		if f.of(a) != f.of(b) {
			out = append(out, f.name)
		}
	}
	// A Label shows only the first names of a long list.
	if !slices.Equal(a.SNI, b.SNI) || !slices.Equal(a.ALPN, b.ALPN) || !slices.Equal(a.Hosts, b.Hosts) {
		out = append(out, "names")
	}
	if out != nil && out[0] == "target" {
		out[0] = "was " + targetOf(a)
	}
	return out
}

// matchOf renders a user protocol's byte patterns, so a reload that edits
// them is a change of the route.
func matchOf(p *protocols.Protocol) string {
	res := make([]string, len(p.MatchRegexes))
	for i, re := range p.MatchRegexes {
		res[i] = re.String()
	}
	return fmt.Sprintf("%x %x %q %d %d %v", p.MatchStartBytes, p.MatchBytes, res, p.NoComparisonBeforeBytes, p.NoComparisonAfterBytes, p.EstablishConnection)
}
