package identify

import (
	"errors"
	"net"
	"os"
	"time"

	"github.com/darkit/protoplex/protocols"
)

// MinBuffer is the smallest identification buffer the engine is given: a
// whole TLS record (16 KiB plus its 5-byte header) fits, so a ClientHello in
// one record can always be inspected for SNI and ALPN routes.
const MinBuffer = 5 + 1<<14

// MaxReads bounds the reads of one identification. Every read re-runs the
// candidates over the whole buffer, so a client dripping its first flight a
// byte per segment would cost time quadratic in the buffer; real clients
// send a first flight in a few segments (a 16 KiB TLS record in a dozen).
// After MaxReads the decision is taken with what is there.
const MaxReads = 64

// Limits bound one identification.
type Limits struct {
	// MinBytes: once this many bytes are read while only byte-pattern
	// routes (regexes, validators, windows: they may never decide) are
	// undecided, decide with what is there (IdentifyMinBytes). Structural
	// detectors and route conditions are never cut short by it: they decide
	// when their framing is complete, within the buffer and Timeout.
	MinBytes int
	// Timeout is the overall deadline of identification (slowloris bound).
	Timeout time.Duration
	// ReadTimeout, if set, bounds the wait for each next read.
	ReadTimeout time.Duration
	// ServerFirstWait: a client silent this long goes to the server-first
	// route (when the route's own Silence is 0).
	ServerFirstWait time.Duration
	// SettleWait: when a route matched but a higher-ranked byte-pattern
	// route still answers NeedMore, take the match after this long without
	// a decision. It never applies while a structural route is pending.
	SettleWait time.Duration
}

// Failure says why no route was found.
type Failure uint8

const (
	OK           Failure = iota
	NoMatch              // every detector rejected the bytes
	Timeout              // deadline passed without a decision
	ClientClosed         // EOF or reset before a decision
	ReadError            // other read error
	BufferFull           // buffer or MinBytes reached without a match
	Fragmented           // MaxReads reads without a decision
)

// String is the metric label.
func (f Failure) String() string {
	switch f {
	case OK:
		return "ok"
	case NoMatch:
		return "no_match"
	case Timeout:
		return "timeout"
	case ClientClosed:
		return "client_closed"
	case ReadError:
		return "read_error"
	case BufferFull:
		return "buffer_full"
	case Fragmented:
		return "fragmented"
	}
	return "unknown"
}

// Result of Identify. N bytes of the buffer were consumed from the client and
// must be replayed to whoever serves the connection, even on failure (the
// fallback route).
type Result struct {
	Route    *Route
	N        int
	Failure  Failure
	Fallback bool // Route is the fallback route
	Silent   bool // Route was chosen on client silence
	Err      error
}

// Metadata is what the route's protocol tells of first, the bytes
// identification read (buf[:N]): SNI and ALPN for TLS, Host for HTTP. ok is
// false without a route, for a fallback or silence route (the bytes are not
// its protocol's), when the protocol has no inspector or the metadata is not
// complete in first. It inspects on every call: the connection path asks
// only when it logs the answer.
func (r Result) Metadata(first []byte) (md protocols.Metadata, ok bool) {
	if r.Route == nil || r.Fallback || r.Silent || r.Route.spec.Inspect == nil {
		return protocols.Metadata{}, false
	}
	return r.Route.spec.Inspect(first)
}

// Identify reads from conn into buf until t can decide. buf[:prefilled]
// already holds bytes read from the client (after a PROXY header, say). It
// leaves conn's read deadline cleared.
//
// The decision is taken when it is certain (Final), when every candidate
// rejected the bytes, when the buffer is full, at the deadline, after
// MaxReads reads, or when the client closes. While a structural route
// ranked above the best match still needs bytes (a ClientHello or header
// block not yet complete), nothing else ends it: split first flights route
// exactly as whole ones. Only byte-pattern routes are cut short, at MinBytes
// or after SettleWait.
func (t *Table) Identify(conn net.Conn, buf []byte, prefilled int, lim Limits) Result {
	var s Session
	if res, done := s.Begin(t, buf, prefilled, lim, time.Now()); done {
		return res
	}
	var current time.Time // the read deadline set on conn
	defer func() {
		if !current.IsZero() {
			_ = conn.SetReadDeadline(time.Time{})
		}
	}()
	for {
		if rd := s.Deadline(); !rd.Equal(current) {
			_ = conn.SetReadDeadline(rd)
			current = rd
		}
		m, err := conn.Read(s.Free())
		if m > 0 {
			if res, done := s.Read(m, time.Now()); done {
				return res
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			if res, done := s.Expire(time.Now()); done {
				return res
			}
		default:
			return s.Closed(err)
		}
	}
}

// fail returns the fallback route, if any, or the failure.
func (t *Table) fail(n int, f Failure, err error) Result {
	if t.fallback != nil {
		return Result{Route: t.fallback, N: n, Fallback: true, Failure: f}
	}
	return Result{N: n, Failure: f, Err: err}
}

// evaluate is Evaluate behind the cache, whose entries expire by now.
func (t *Table) evaluate(data []byte, now time.Time) Verdict {
	if t.cache == nil {
		return t.Evaluate(data)
	}
	if v, ok := t.cache.Get(data, now); ok {
		return v
	}
	v := t.Evaluate(data)
	t.cache.Put(data, v, now)
	return v
}
