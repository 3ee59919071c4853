package identify

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// Session is one identification in progress, driven by its caller's reads:
// the caller reads into Free, reports each read with Read, calls Expire when
// Deadline passes without a byte, and Closed on a read error or EOF. Each of
// them answers done once the decision is taken; the Session is not used after
// that. Identify is a loop over a Session around a blocking net.Conn; an
// event loop drives one the same way from its readiness and timer events, so
// both decide identically.
//
// The zero value is unusable; Begin starts it. It does not allocate (with
// the table's cache off: the cache copies the flights it stores).
type Session struct {
	t        *Table
	buf      []byte
	n        int // bytes read into buf
	reads    int // reads since Begin (the prefilled bytes are not one)
	minBytes int // MinBytes clamped to the buffer
	v        Verdict

	readTimeout time.Duration
	settleWait  time.Duration

	deadline   time.Time // the overall timeout
	silenceEnd time.Time // the server-first wait; zero when none applies
	settleEnd  time.Time // the settle wait; zero while it does not run
	lastRead   time.Time // Begin or the last read: the per-read timeout runs from it
}

// Begin starts an identification over buf, whose first prefilled bytes are
// already read (after a PROXY header, say), at time now. done is true when
// the prefilled bytes decide already. An empty buf decides at once
// (BufferFull): there is nowhere to read into.
func (s *Session) Begin(t *Table, buf []byte, prefilled int, lim Limits, now time.Time) (res Result, done bool) {
	*s = Session{
		t:           t,
		buf:         buf,
		n:           prefilled,
		minBytes:    lim.MinBytes,
		readTimeout: lim.ReadTimeout,
		settleWait:  lim.SettleWait,
		deadline:    now.Add(lim.Timeout),
		lastRead:    now,
	}
	if s.minBytes <= 0 || s.minBytes > len(buf) {
		s.minBytes = len(buf)
	}
	if s.n > 0 {
		s.v = t.evaluate(buf[:s.n], now)
		return s.decide(now)
	}
	if len(buf) == 0 {
		return t.fail(0, BufferFull, nil), true
	}
	if t.serverFirst != nil {
		wait := t.serverFirst.spec.Silence
		if wait <= 0 {
			wait = lim.ServerFirstWait
		}
		if wait > 0 {
			s.silenceEnd = now.Add(wait)
		}
	}
	return Result{}, false
}

// Free is where the next read goes: buf[N():]. Never empty while the
// session is undecided.
func (s *Session) Free() []byte { return s.buf[s.n:] }

// N is the bytes read so far, the prefilled ones included.
func (s *Session) N() int { return s.n }

// Read records that m > 0 more bytes were read into Free() at time now. The
// candidates are re-run over all the bytes read; after MaxReads reads the
// decision is taken with what is there.
func (s *Session) Read(m int, now time.Time) (res Result, done bool) {
	s.n += m
	s.reads++
	s.lastRead = now
	s.v = s.t.evaluate(s.buf[:s.n], now)
	if res, done := s.decide(now); done {
		return res, true
	}
	if s.reads >= MaxReads {
		if s.v.Best != nil {
			return Result{Route: s.v.Best, N: s.n}, true
		}
		return s.t.fail(s.n, Fragmented, nil), true
	}
	return Result{}, false
}

// decide applies the rules of Identify to the verdict after n bytes; done is
// false while the session should read more.
func (s *Session) decide(now time.Time) (res Result, done bool) {
	v := s.v
	switch {
	case v.Final:
		return Result{Route: v.Best, N: s.n}, true
	case v.Rejected:
		return s.t.fail(s.n, NoMatch, nil), true
	case s.n >= len(s.buf):
		if v.Best != nil {
			return Result{Route: v.Best, N: s.n}, true
		}
		return s.t.fail(s.n, BufferFull, nil), true
	case v.Structural:
		s.settleEnd = time.Time{}
	case s.n >= s.minBytes:
		if v.Best != nil {
			return Result{Route: v.Best, N: s.n}, true
		}
		return s.t.fail(s.n, BufferFull, nil), true
	case v.Best != nil && s.settleEnd.IsZero() && s.settleWait > 0:
		s.settleEnd = now.Add(s.settleWait)
	}
	return Result{}, false
}

// Deadline is when Expire must be called if no byte arrives first: the
// earliest of the overall timeout, the server-first silence (only while no
// byte was read), the settle wait and the per-read timeout (from the last
// read, or Begin) that apply now. It is never zero; with a zero
// Limits.Timeout it is Begin's time.
func (s *Session) Deadline() time.Time {
	rd := s.deadline
	if s.n == 0 && !s.silenceEnd.IsZero() && s.silenceEnd.Before(rd) {
		rd = s.silenceEnd
	}
	if !s.settleEnd.IsZero() && s.settleEnd.Before(rd) {
		rd = s.settleEnd
	}
	if s.readTimeout > 0 {
		if per := s.lastRead.Add(s.readTimeout); per.Before(rd) {
			rd = per
		}
	}
	return rd
}

// Expire is called at or after Deadline without a byte read. done false:
// keep waiting (see Deadline again); a call before Deadline is a spurious
// wake-up and answers that. A silent client goes to the server-first route;
// the settle wait, the per-read timeout or the overall timeout take the best
// match; with none, the per-read or overall timeout fail as Timeout.
func (s *Session) Expire(now time.Time) (res Result, done bool) {
	if now.Before(s.Deadline()) {
		return Result{}, false
	}
	v := s.v
	perRead := s.readTimeout > 0 && !now.Before(s.lastRead.Add(s.readTimeout))
	switch {
	case s.n == 0 && !s.silenceEnd.IsZero() && !now.Before(s.silenceEnd) && now.Before(s.deadline):
		return Result{Route: s.t.serverFirst, Silent: true}, true
	case v.Best != nil && (!v.Structural || perRead || !now.Before(s.deadline)):
		// The settle wait, the per-read gap or the deadline ended the
		// wait for a better route.
		return Result{Route: v.Best, N: s.n}, true
	case now.Before(s.deadline) && !perRead:
		// The settle wait ended while nothing matched: it has run, so
		// Deadline moves on to the next bound.
		if !s.settleEnd.IsZero() && !now.Before(s.settleEnd) {
			s.settleEnd = time.Time{}
		}
		return Result{}, false
	}
	return s.t.fail(s.n, Timeout, os.ErrDeadlineExceeded), true
}

// Closed ends the session on a read error or EOF. The client closed its
// side (or reset) before a certain decision: a complete first flight
// followed by a half-close still routes to the best match. Otherwise io.EOF
// or a reset (ECONNRESET, EPIPE, ETIMEDOUT, or a net.OpError that is not a
// timeout) fails as ClientClosed, to the fallback route when bytes were
// read; any other error fails as ReadError.
func (s *Session) Closed(err error) Result {
	if s.v.Best != nil {
		return Result{Route: s.v.Best, N: s.n}
	}
	if errors.Is(err, io.EOF) || isReset(err) {
		if s.n > 0 && s.t.fallback != nil {
			return Result{Route: s.t.fallback, N: s.n, Fallback: true, Failure: ClientClosed}
		}
		return Result{N: s.n, Failure: ClientClosed, Err: err}
	}
	return Result{N: s.n, Failure: ReadError, Err: err}
}

// isReset reports whether err says the peer went away: the errnos a
// socket's read gives for that (as an event loop's raw read reports them,
// or wrapped by the net package), or any net.OpError that is not a timeout.
func isReset(err error) bool {
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ETIMEDOUT) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}
