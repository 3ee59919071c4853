package identify

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/darkit/protoplex/protocols"
)

// t0 is the fake clock's start: sessions are driven with explicit times, so
// timeouts are decided without waiting.
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// event is what the client does at a time after Begin: send data (one read
// per Free-sized piece), or, with err set, end the stream (io.EOF: it
// closed).
type event struct {
	at   time.Duration
	data []byte
	err  error
}

// runSession drives a Session the way an event loop does: the clock jumps
// to each event, calling Expire at every Deadline that comes first; after
// the last event the client is silent until the session decides. It returns
// the result and when it was decided, after Begin.
func runSession(t testing.TB, tb *Table, buf []byte, prefilled int, l Limits, evs ...event) (Result, time.Duration) {
	t.Helper()
	var s Session
	now := t0
	if res, done := s.Begin(tb, buf, prefilled, l, now); done {
		return res, 0
	}
	// waitUntil expires every deadline up to at.
	waitUntil := func(at time.Time) (Result, bool) {
		for {
			d := s.Deadline()
			if d.IsZero() {
				t.Fatal("zero Deadline while undecided")
			}
			if d.After(at) {
				now = at
				return Result{}, false
			}
			if d.After(now) {
				now = d
			}
			if res, done := s.Expire(now); done {
				return res, true
			}
			if !s.Deadline().After(now) {
				t.Fatalf("Expire at %v kept waiting, but Deadline %v has passed: the caller would spin", now.Sub(t0), s.Deadline().Sub(t0))
			}
		}
	}
	for _, ev := range evs {
		if res, done := waitUntil(t0.Add(ev.at)); done {
			return res, now.Sub(t0)
		}
		if ev.err != nil {
			return s.Closed(ev.err), now.Sub(t0)
		}
		for data := ev.data; len(data) > 0; {
			free := s.Free()
			if len(free) == 0 {
				t.Fatal("Free empty while undecided")
			}
			m := copy(free, data)
			data = data[m:]
			if res, done := s.Read(m, now); done {
				return res, now.Sub(t0)
			}
		}
	}
	res, done := waitUntil(t0.Add(time.Hour))
	if !done {
		t.Fatal("silent client still undecided after an hour")
	}
	return res, now.Sub(t0)
}

func sameResult(a, b Result) bool {
	return a.Route == b.Route && a.N == b.N && a.Failure == b.Failure && a.Fallback == b.Fallback &&
		a.Silent == b.Silent && a.Err == b.Err
}

func describe(r Result) string {
	s := resultKey(r)
	if r.Fallback {
		s += "/fallback"
	}
	if r.Silent {
		s += "/silent"
	}
	if r.Err != nil {
		s += "/" + r.Err.Error()
	}
	return s
}

// sameAsIdentify runs Identify over chunks, each one read, then end (io.EOF
// when nil), and a Session fed the same reads and end, and fails unless
// both give the same Result.
func sameAsIdentify(t *testing.T, tb *Table, size int, l Limits, end error, chunks ...[]byte) Result {
	t.Helper()
	script := make([][]byte, len(chunks))
	evs := make([]event, 0, len(chunks)+1)
	for i, c := range chunks {
		script[i] = bytes.Clone(c)
		evs = append(evs, event{data: c})
	}
	want := tb.Identify(&scriptConn{chunks: script, err: end}, make([]byte, size), 0, l)
	if end == nil {
		end = io.EOF
	}
	got, _ := runSession(t, tb, make([]byte, size), 0, l, append(evs, event{err: end})...)
	if !sameResult(got, want) {
		t.Fatalf("%d chunks: session %s after %d bytes, Identify %s after %d", len(chunks), describe(got), got.N, describe(want), want.N)
	}
	return got
}

// TestSessionMatchesIdentifyOnSplits: every recorded flight, whole, split
// at every offset into two reads, at random offsets into three, and a byte
// per read, gives the Result Identify gives for the same reads.
func TestSessionMatchesIdentifyOnSplits(t *testing.T) {
	tb := mustTable(t, routedCatalogue(t)...)
	rng := rand.New(rand.NewPCG(3, 4))
	for name, data := range splitFlights(t) {
		t.Run(name, func(t *testing.T) {
			sameAsIdentify(t, tb, 32<<10, prodLimits, nil, data)
			for i := 1; i < len(data); i++ {
				sameAsIdentify(t, tb, 32<<10, prodLimits, nil, data[:i], data[i:])
			}
			for k := 0; k < 50 && len(data) > 2; k++ {
				a, b := 1+rng.IntN(len(data)-1), 1+rng.IntN(len(data)-1)
				a, b = min(a, b), max(a, b)
				sameAsIdentify(t, tb, 32<<10, prodLimits, nil, data[:a], data[a:b], data[b:])
			}
			drip := make([][]byte, len(data))
			for i := range data {
				drip[i] = data[i : i+1]
			}
			sameAsIdentify(t, tb, 32<<10, prodLimits, nil, drip...)
		})
	}
}

// TestSessionMatchesIdentifyOnBufferLimits: ClientHellos longer than a
// record, and longer than the buffer, decide alike.
func TestSessionMatchesIdentifyOnBufferLimits(t *testing.T) {
	tb := mustTable(t, routedCatalogue(t)...)
	two := bigClientHello(t, 20<<10)
	for _, at := range []int{1, 5, 1 << 14, 1<<14 + 7, len(two) - 1} {
		if got := sameAsIdentify(t, tb, 32<<10, prodLimits, nil, two[:at], two[at:]); resultKey(got) != "TLS[sni=a.example]/ok" {
			t.Fatalf("20 KiB ClientHello split at %d: %s", at, resultKey(got))
		}
	}
	hello := bigClientHello(t, 40<<10)
	if got := sameAsIdentify(t, tb, MinBuffer, prodLimits, nil, hello); resultKey(got) != "TLS/ok" || got.N != MinBuffer {
		t.Fatalf("40 KiB ClientHello: %s after %d bytes", resultKey(got), got.N)
	}
}

// TestSessionMatchesIdentifyOnEnds: what a read error or close before a
// decision gives, for the errors a net.Conn returns and those an event
// loop's raw read reports (io.EOF for a 0-byte read, an errno in an
// os.SyscallError).
func TestSessionMatchesIdentifyOnEnds(t *testing.T) {
	fb := prefix("FB", 0, "\x00never")
	fb.Fallback = true
	plain := mustTable(t, prefix("A", 0, "AAAA"))
	withFallback := mustTable(t, prefix("A", 0, "AAAA"), fb)
	defers := mustTable(t, prefix("GENERIC", 5, "AB"), prefix("SPECIFIC", 0, "ABCD"))
	sys := func(e syscall.Errno) error { return os.NewSyscallError("read", e) }
	opReset := &net.OpError{Op: "read", Net: "tcp", Err: sys(syscall.ECONNRESET)}
	for _, c := range []struct {
		name  string
		tb    *Table
		end   error
		bytes string
		want  string
	}{
		{"eof", plain, io.EOF, "A", "none/client_closed/EOF"},
		{"eof before a byte", withFallback, io.EOF, "", "none/client_closed/EOF"},
		{"eof to the fallback", withFallback, io.EOF, "A", "FB/client_closed/fallback"},
		{"half-close after a match", defers, io.EOF, "AB", "GENERIC/ok"},
		{"read error after a match", defers, sys(syscall.EBADF), "AB", "GENERIC/ok"},
		{"econnreset", withFallback, sys(syscall.ECONNRESET), "A", "FB/client_closed/fallback"},
		{"econnreset without bytes", withFallback, sys(syscall.ECONNRESET), "", "none/client_closed/read: " + syscall.ECONNRESET.Error()},
		{"epipe", plain, sys(syscall.EPIPE), "A", "none/client_closed/read: " + syscall.EPIPE.Error()},
		{"etimedout", plain, sys(syscall.ETIMEDOUT), "A", "none/client_closed/read: " + syscall.ETIMEDOUT.Error()},
		{"net reset", plain, opReset, "A", "none/client_closed/" + opReset.Error()},
		{"other errno", withFallback, sys(syscall.EBADF), "A", "none/read_error/read: " + syscall.EBADF.Error()},
		{"other error", withFallback, errors.New("boom"), "A", "none/read_error/boom"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var chunks [][]byte
			if c.bytes != "" {
				chunks = append(chunks, []byte(c.bytes))
			}
			if got := sameAsIdentify(t, c.tb, 64, prodLimits, c.end, chunks...); describe(got) != c.want {
				t.Fatalf("got %s, want %s", describe(got), c.want)
			}
		})
	}
}

// flipSpec matches an odd number of bytes and rejects an even one: a
// byte-pattern route whose match comes and goes with the reads.
var flipSpec = protocols.Spec{Name: "FLIP", Detect: func(data []byte) protocols.Result {
	if len(data)%2 == 1 {
		return protocols.Match
	}
	return protocols.NoMatch
}}

// undecidedSpec never decides (a regex that never matches, say), ranked
// above flipSpec.
var undecidedSpec = protocols.Spec{Name: "UNDECIDED", Specificity: 1, Detect: func([]byte) protocols.Result { return protocols.NeedMore }}

// timedCase is a client's events and the decision they must give, and when.
type timedCase struct {
	name   string
	tb     *Table
	l      Limits
	evs    []event
	want   string
	n      int
	at     time.Duration // when it is decided, after Begin
	silent bool
}

// TestSessionTimeouts: the waits Identify's timed tests take over real
// pipes, decided by Expire on a fake clock, with the same results and at
// the time each bound says.
func TestSessionTimeouts(t *testing.T) {
	smtp := &protocols.Protocol{Name: "SMTP", MatchStartBytes: [][]byte{[]byte("EHLO ")},
		EstablishConnection: []protocols.EstablishConnection{{}}}
	quick := &protocols.Protocol{Name: "QUICK", MatchStartBytes: [][]byte{[]byte("HELO ")},
		EstablishConnection: []protocols.EstablishConnection{{Silence: 20 * time.Millisecond}}}
	routed := mustTable(t, routedCatalogue(t)...)
	fl := splitFlights(t)
	chromium := fl["tls-chromium.bin"]
	flip, err := New([]RouteSpec{{Spec: flipSpec}, {Spec: undecidedSpec}}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	with := func(f func(*Limits)) Limits {
		l := lim // MinBytes 1024, Timeout 5 s, server-first and settle waits 50 ms
		f(&l)
		return l
	}
	ms := time.Millisecond
	cases := []timedCase{
		{"settle wait", mustTable(t, prefix("GENERIC", 5, "AB"), prefix("SPECIFIC", 0, "ABCD")), lim,
			[]event{{data: []byte("AB")}}, "GENERIC/ok", 2, 50 * ms, false},
		{"settle runs from the first match", mustTable(t, prefix("GENERIC", 5, "AB"), prefix("SPECIFIC", 0, "ABCD")), lim,
			[]event{{data: []byte("AB")}, {at: 30 * ms, data: []byte("C")}}, "GENERIC/ok", 3, 50 * ms, false},
		{"overall timeout", mustTable(t, prefix("A", 0, "AAAA")), with(func(l *Limits) { l.Timeout = 50 * ms }),
			[]event{{data: []byte("AA")}}, "none/timeout", 2, 50 * ms, false},
		{"silence", mustTable(t, prefix("A", 0, "AAAA"), smtp), lim, nil, "SMTP/ok", 0, 50 * ms, true},
		{"the route's own silence", mustTable(t, prefix("A", 0, "AAAA"), quick), lim, nil, "QUICK/ok", 0, 20 * ms, true},
		{"silence past the timeout", mustTable(t, prefix("A", 0, "AAAA"), smtp), with(func(l *Limits) { l.Timeout = 40 * ms }),
			nil, "none/timeout", 0, 40 * ms, false},
		{"a byte ends the silence", mustTable(t, prefix("A", 0, "AAAA"), smtp), lim,
			[]event{{at: 10 * ms, data: []byte("A")}}, "none/timeout", 1, 5 * time.Second, false},
		{"speaking client", mustTable(t, prefix("A", 0, "AAAA"), smtp), lim,
			[]event{{at: 10 * ms, data: []byte("AAAA")}}, "A/ok", 4, 10 * ms, false},
		{"per-read timeout", mustTable(t, prefix("A", 0, "AAAAAA")), with(func(l *Limits) { l.ReadTimeout = 50 * ms }),
			[]event{{data: []byte("AA")}}, "none/timeout", 2, 50 * ms, false},
		{"per-read timeout from the last read", mustTable(t, prefix("A", 0, "AAAAAA")), with(func(l *Limits) { l.ReadTimeout = 50 * ms }),
			[]event{{data: []byte("AA")}, {at: 40 * ms, data: []byte("A")}}, "none/timeout", 3, 90 * ms, false},
		{"per-read timeout from Begin", mustTable(t, prefix("A", 0, "AAAAAA")), with(func(l *Limits) { l.ReadTimeout = 50 * ms }),
			nil, "none/timeout", 0, 50 * ms, false},
		{"per-read gap ends a structural wait", routed, with(func(l *Limits) { l.ReadTimeout = 100 * ms }),
			[]event{{data: chromium[:1400]}}, "TLS/ok", 1400, 100 * ms, false},
		{"deadline ends a structural wait", routed, with(func(l *Limits) { l.Timeout = 200 * ms }),
			[]event{{data: chromium[:1400]}}, "TLS/ok", 1400, 200 * ms, false},
		{"settle expired with no match left", flip, lim,
			[]event{{data: []byte("A")}, {at: 10 * ms, data: []byte("B")}}, "none/timeout", 2, 5 * time.Second, false},
		{"a new match after a settle that found none waits again", flip, lim,
			[]event{{data: []byte("A")}, {at: 10 * ms, data: []byte("B")}, {at: 60 * ms, data: []byte("C")}}, "FLIP/ok", 3, 110 * ms, false},
	}
	for _, c := range pausedSplits {
		data := fl[c.flight]
		cases = append(cases, timedCase{c.flight + " with a pause", routed, lim,
			[]event{{data: data[:c.at]}, {at: 4 * lim.SettleWait, data: data[c.at:]}}, c.want, len(data), 4 * lim.SettleWait, false})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, at := runSession(t, c.tb, make([]byte, MinBuffer), 0, c.l, c.evs...)
			if resultKey(res) != c.want || res.N != c.n || res.Silent != c.silent || at != c.at {
				t.Fatalf("%s after %d bytes at %v (silent %v), want %s after %d at %v (silent %v)",
					resultKey(res), res.N, at, res.Silent, c.want, c.n, c.at, c.silent)
			}
			if res.Failure == Timeout && !errors.Is(res.Err, os.ErrDeadlineExceeded) {
				t.Fatalf("timeout with error %v", res.Err)
			}
		})
	}
}

// TestSessionBegin: prefilled bytes decide at Begin or count towards the
// decision (but not as a read, nor against the silence wait); an empty
// buffer decides at once; a call to Expire before Deadline keeps waiting.
func TestSessionBegin(t *testing.T) {
	smtp := &protocols.Protocol{Name: "SMTP", MatchStartBytes: [][]byte{[]byte("EHLO ")},
		EstablishConnection: []protocols.EstablishConnection{{}}}
	tb := mustTable(t, prefix("A", 0, "AAAA"), smtp)
	var s Session
	buf := []byte("AAAA----")
	if res, done := s.Begin(tb, buf, 4, lim, t0); !done || resultKey(res) != "A/ok" || res.N != 4 {
		t.Fatalf("prefilled AAAA: done %v, %s after %d", done, resultKey(res), res.N)
	}
	if res, done := s.Begin(tb, buf, 2, lim, t0); done || s.N() != 2 || len(s.Free()) != len(buf)-2 {
		t.Fatalf("prefilled AA: done %v (%s), N %d, Free %d", done, resultKey(res), s.N(), len(s.Free()))
	}
	if d := s.Deadline(); !d.Equal(t0.Add(lim.Timeout)) {
		t.Fatalf("prefilled bytes: Deadline after %v, want the timeout %v (no silence wait)", d.Sub(t0), lim.Timeout)
	}
	if _, done := s.Expire(t0.Add(lim.Timeout - 1)); done {
		t.Fatal("Expire before Deadline decided")
	}
	if res, done := s.Read(copy(s.Free(), "AA"), t0.Add(time.Millisecond)); !done || resultKey(res) != "A/ok" || res.N != 4 {
		t.Fatalf("prefilled AA, read AA: done %v, %s after %d", done, resultKey(res), res.N)
	}
	// A match waiting for the settle wait is not taken before it ends.
	defers := mustTable(t, prefix("GENERIC", 5, "AB"), prefix("SPECIFIC", 0, "ABCD"))
	s.Begin(defers, []byte("AB--"), 2, lim, t0)
	if res, done := s.Expire(t0.Add(lim.SettleWait - 1)); done {
		t.Fatalf("Expire before the settle wait ended decided %s", describe(res))
	}
	if res, done := s.Expire(t0.Add(lim.SettleWait)); !done || resultKey(res) != "GENERIC/ok" {
		t.Fatalf("Expire at the settle wait: done %v, %s", done, describe(res))
	}
	if res, done := s.Begin(tb, nil, 0, lim, t0); !done || res.Failure != BufferFull {
		t.Fatalf("empty buffer: done %v, %s", done, describe(res))
	}
	// MaxReads counts reads, not the prefilled bytes.
	dripper := mustTable(t, &protocols.Protocol{Name: "W", MatchBytes: [][]byte{[]byte("needle")}})
	big := make([]byte, 4096)
	s.Begin(dripper, big, 1, prodLimits, t0)
	for i := 1; i < MaxReads; i++ {
		if res, done := s.Read(1, t0); done {
			t.Fatalf("decided after %d reads: %s", i, describe(res))
		}
	}
	if res, done := s.Read(1, t0); !done || res.Failure != Fragmented || res.N != MaxReads+1 {
		t.Fatalf("read %d: done %v, %s after %d", MaxReads, done, describe(res), res.N)
	}
}

// TestSessionDoesNotAllocate: with the cache off, a session over the
// built-in detectors allocates nothing, however it is decided.
func TestSessionDoesNotAllocate(t *testing.T) {
	tb := mustTable(t, builtins("127.0.0.1:1")...)
	fl := splitFlights(t)
	hello, req := fl["tls-chromium.bin"], fl["http-curl.bin"]
	buf := make([]byte, MinBuffer)
	var s Session
	feed := func(data []byte, seg int) {
		for i := 0; i < len(data); i += seg {
			m := copy(s.Free(), data[i:min(i+seg, len(data))])
			if _, done := s.Read(m, t0); done {
				return
			}
		}
	}
	allocs := testing.AllocsPerRun(50, func() {
		// Read to a decision.
		s.Begin(tb, buf, 0, prodLimits, t0)
		s.Expire(t0) // before Deadline: keeps waiting
		feed(hello, 300)
		s.Begin(tb, buf, 0, prodLimits, t0)
		feed(req, 7)
		// Expire to a decision: a record not complete at the deadline, and
		// a silent client.
		s.Begin(tb, buf, 0, prodLimits, t0)
		feed(hello[:900], 300)
		s.Expire(s.Deadline())
		s.Begin(tb, buf, 0, prodLimits, t0)
		s.Expire(s.Deadline())
		s.Begin(tb, buf[:0], 0, prodLimits, t0)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per run", allocs)
	}
}
