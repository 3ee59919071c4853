// Package logging holds what protoplex tells the operator about each
// connection: the access record the connection path fills on its way and
// writes as one line when the connection ends, and the duration value that
// both slog handlers print in a unit an operator reads.
package logging

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/darkit/protoplex/internal/identify"
	"github.com/darkit/protoplex/internal/metrics"
	"github.com/darkit/protoplex/internal/proxy"
	"github.com/darkit/protoplex/protocols"
)

// Duration is a time.Duration as logs show it: slog's text handler prints
// it as time.Duration does ("12.5ms", through MarshalText), the JSON
// handler as seconds in a number (0.0125, through MarshalJSON), the unit
// of the metrics; JSON's consumers need not know Go counts nanoseconds.
type Duration time.Duration

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText returns String.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// MarshalJSON returns the seconds as a JSON number.
func (d Duration) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, time.Duration(d).Seconds(), 'f', -1, 64), nil
}

// Values of an access line's close attribute other than a forwarded
// connection's proxy.CloseReason.
const (
	CloseRefused      = "refused"               // refused before identification; reason says why
	CloseUnidentified = "unidentified"          // no route; reason is the identify.Failure
	CloseDialError    = metrics.ClosedDialError // no backend could be dialed; err says why
	CloseHandled      = "handled"               // served by an in-process handler
)

// AccessMessage is the message of every access line.
const AccessMessage = "connection closed"

// OpenMessage is the message of the line written when a connection is
// routed and its backend connected (or its handler given it).
const OpenMessage = "connection opened"

// AccessMode says which access lines are written at INFO: Close
// (server.access_log) the one line per connection when it ends, Open
// (server.access_log_open, with Close) also one when it opens. A line not
// at INFO is written at DEBUG, so log_level debug shows both ends of every
// connection.
type AccessMode struct{ Close, Open bool }

// Access is one connection's access record: the connection path fills it
// on its way and Log writes it, one line, when the connection ends. When
// the line would not be written (see NewAccess) its methods only store
// what they are given: no formatting, no allocation.
type Access struct {
	log       *slog.Logger
	level     slog.Level
	on        bool
	openLevel slog.Level
	openOn    bool

	// Start is when the connection was accepted.
	Start time.Time
	// Client is the client's address, the one a trusted PROXY header
	// names when there is one.
	Client net.Addr

	protocol, route string
	fallback        bool
	md              protocols.Metadata
	target          string
	up, down        int64
	close, reason   string
	err             error
}

// NewAccess starts the record of a connection from client, accepted now.
// Its lines are written at the levels mode says, each only when log has
// that level enabled.
func NewAccess(log *slog.Logger, mode AccessMode, client net.Addr) Access {
	level, openLevel := slog.LevelDebug, slog.LevelDebug
	if mode.Close {
		level = slog.LevelInfo
		if mode.Open {
			openLevel = slog.LevelInfo
		}
	}
	ctx := context.Background()
	return Access{log: log, level: level, on: log.Enabled(ctx, level), openLevel: openLevel, openOn: log.Enabled(ctx, openLevel),
		Start: time.Now(), Client: client}
}

// Refused records a refusal before identification, for reason (a
// protoplex_connections_refused_total reason).
func (a *Access) Refused(reason string) { a.close, a.reason = CloseRefused, reason }

// Unidentified records that no route was found after reading n bytes.
func (a *Access) Unidentified(res identify.Result) {
	a.close, a.reason, a.up = CloseUnidentified, res.Failure.String(), int64(res.N)
}

// Routed records the route identification chose: its protocol, its label
// (the protocol with its conditions), what the bytes read tell (SNI, ALPN,
// Host: inspected only when the line will be written) and, for a protocol
// served in-process, that the connection is handled.
func (a *Access) Routed(p *protocols.Protocol, route string, res identify.Result, first []byte) {
	a.protocol, a.route, a.fallback, a.up = p.Name, route, res.Fallback, int64(res.N)
	if p.Handler != nil {
		a.close = CloseHandled
	}
	if a.on || a.openOn {
		a.md, _ = res.Metadata(first)
	}
}

// Opened writes the open line of a routed connection whose backend target
// connected ("" for one served in-process): client, protocol, route,
// fallback, sni, host, alpn and target, as the closing line has them.
func (a *Access) Opened(target string) {
	if !a.openOn {
		return
	}
	attrs := a.routeAttrs(make([]slog.Attr, 0, 8))
	if target != "" {
		attrs = append(attrs, slog.String("target", target))
	}
	a.log.LogAttrs(context.Background(), a.openLevel, OpenMessage, attrs...)
}

// routeAttrs appends the client and what is known of the route.
func (a *Access) routeAttrs(attrs []slog.Attr) []slog.Attr {
	attrs = append(attrs, slog.String("client", addrString(a.Client)))
	if a.protocol != "" {
		attrs = append(attrs, slog.String("protocol", a.protocol), slog.String("route", a.route))
	}
	if a.fallback {
		attrs = append(attrs, slog.Bool("fallback", true))
	}
	if a.md.SNI != "" {
		attrs = append(attrs, slog.String("sni", a.md.SNI))
	}
	if a.md.Host != "" {
		attrs = append(attrs, slog.String("host", a.md.Host))
	}
	if len(a.md.ALPN) > 0 {
		attrs = append(attrs, slog.String("alpn", strings.Join(a.md.ALPN, ",")))
	}
	return attrs
}

// DialFailed records that no backend could be dialed.
func (a *Access) DialFailed(err error) { a.close, a.err = CloseDialError, err }

// Forwarded records the end of forwarding to target.
func (a *Access) Forwarded(target string, fs proxy.Stats) {
	a.target, a.up, a.down, a.close = target, fs.Up, fs.Down, fs.Reason.String()
}

// Log writes the line: client, protocol, route, fallback, sni, host, alpn
// and target when known, bytes up (client to backend, what identification
// read included) and down, duration, close and, for refusals and
// unidentified connections, reason (err for dial errors).
func (a *Access) Log() {
	if !a.on {
		return
	}
	attrs := a.routeAttrs(make([]slog.Attr, 0, 14))
	if a.target != "" {
		attrs = append(attrs, slog.String("target", a.target))
	}
	attrs = append(attrs, slog.Int64("up", a.up), slog.Int64("down", a.down),
		slog.Any("duration", Duration(time.Since(a.Start))), slog.String("close", a.close))
	if a.reason != "" {
		attrs = append(attrs, slog.String("reason", a.reason))
	}
	if a.err != nil {
		attrs = append(attrs, slog.String("err", a.err.Error()))
	}
	a.log.LogAttrs(context.Background(), a.level, AccessMessage, attrs...)
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// FlowMessage is the message of every UDP flow's access line.
const FlowMessage = "udp flow ended"

// Flow is one UDP flow's access record, written by LogFlow when the flow
// ends.
type Flow struct {
	Start         time.Time
	Client        net.Addr
	Protocol      string
	Route         string
	Target        string
	DatagramsUp   int64 // client → backend
	DatagramsDown int64
	BytesUp       int64
	BytesDown     int64
	Reason        string // idle, evicted, closed
}

// LogFlow writes f's line, at INFO with accessLog (server.access_log),
// else at DEBUG; only when log has that level enabled.
func LogFlow(log *slog.Logger, accessLog bool, f Flow) {
	level := slog.LevelDebug
	if accessLog {
		level = slog.LevelInfo
	}
	if !log.Enabled(context.Background(), level) {
		return
	}
	log.LogAttrs(context.Background(), level, FlowMessage, slog.String("client", addrString(f.Client)),
		slog.String("protocol", f.Protocol), slog.String("route", f.Route), slog.String("target", f.Target),
		slog.Int64("datagrams_up", f.DatagramsUp), slog.Int64("datagrams_down", f.DatagramsDown),
		slog.Int64("up", f.BytesUp), slog.Int64("down", f.BytesDown),
		slog.Any("duration", Duration(time.Since(f.Start))), slog.String("close", f.Reason))
}

// Carried is what an access record knows of a connection before it ends,
// which an upgrade carries to the process that takes the connection over:
// that process writes the line when it ends.
type Carried struct {
	Protocol, Route string
	Fallback        bool
	MD              protocols.Metadata
}

// Carry returns what Resume needs to go on with the record elsewhere.
func (a *Access) Carry() Carried {
	return Carried{Protocol: a.protocol, Route: a.route, Fallback: a.fallback, MD: a.md}
}

// Resume takes up a record another process began (Carry); Start and
// Client are set by the caller.
func (a *Access) Resume(c Carried) {
	a.protocol, a.route, a.fallback, a.md = c.Protocol, c.Route, c.Fallback, c.MD
}
