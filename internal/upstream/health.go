package upstream

import (
	"bufio"
	"context"
	"fmt"
	"github.com/darkit/protoplex/protocols"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"
)

// HealthCheck configures active checks (Interval 0 disables them; passive
// health still applies); Pool keeps MinIdle pre-dialed connections per
// target, each handed to one client only, discarded older than MaxIdleTime
// (default 30s). They are the protocols package's types: the configuration,
// the route and this package share one definition.
type (
	HealthCheck = protocols.HealthConfig
	Pool        = protocols.PoolConfig
)

// MaxPoolIdle bounds Pool.MinIdle: every pooled connection is a socket and
// an fd held open, and the pool's channel is allocated at that capacity.
const MaxPoolIdle = 1000

// maxReplyLine bounds the status line a probe reads (a Redis "+PONG" or an
// HTTP status line); a reply without a newline within it fails the probe.
const maxReplyLine = 512

// health state of a target under active checks.
type health struct {
	mu        sync.Mutex
	ok, fails int
	up        bool
	last      CheckResult
}

// Start runs the active health checks and the warm pool refill until ctx is
// done or Close is called. A no-op when neither is configured.
func (s *Set) Start(ctx context.Context) {
	if s.opt.Health.Interval <= 0 && s.opt.Pool.MinIdle <= 0 {
		return
	}
	ctx, s.cancel = context.WithCancel(ctx)
	for _, t := range s.targets {
		if s.opt.Health.Interval > 0 {
			t.health = &health{up: true}
			s.wg.Add(1)
			go s.checkLoop(ctx, t)
		}
		if s.opt.Pool.MinIdle > 0 {
			t.pool = make(chan pooled, s.opt.Pool.MinIdle)
			s.wg.Add(1)
			go s.refillLoop(ctx, t)
		}
	}
}

// Close stops checks and refills and closes pooled connections.
func (s *Set) Close() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.wg.Wait()
	for _, t := range s.targets {
		for t.pool != nil && len(t.pool) > 0 {
			(<-t.pool).c.Close()
		}
	}
}

func (s *Set) checkLoop(ctx context.Context, t *target) {
	defer s.wg.Done()
	hc := s.opt.Health
	rise, fall := max(hc.Rise, 1), max(hc.Fall, 1)
	if hc.Rise == 0 {
		rise = 2
	}
	if hc.Fall == 0 {
		fall = 3
	}
	timeout := hc.Timeout
	if timeout <= 0 {
		timeout = min(hc.Interval, 5*time.Second)
	}
	tick := time.NewTicker(hc.Interval)
	defer tick.Stop()
	for {
		if Admin(t.admin.Load()) == Maint { // maintenance pauses the checks
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				continue
			}
		}
		begin := s.now()
		err := s.probe(ctx, t, timeout)
		s.checks.Add(1)
		h := t.health
		h.mu.Lock()
		h.last = CheckResult{At: begin, Duration: s.now().Sub(begin)}
		if err != nil {
			h.last.Err = truncate(err.Error(), maxCheckError)
		}
		was := h.up
		if err == nil {
			h.ok, h.fails = h.ok+1, 0
			if !h.up && h.ok >= rise {
				h.up = true
			}
		} else {
			h.fails, h.ok = h.fails+1, 0
			if h.up && h.fails >= fall {
				h.up = false
			}
		}
		now := h.up
		h.mu.Unlock()
		if now != was {
			t.since.Store(s.now().UnixNano())
			if s.opt.StateChange != nil {
				s.opt.StateChange(t.Addr, now)
			}
		}
		if now {
			t.downUntil.Store(0)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// probe checks one target once, within timeout; cancelling ctx aborts it.
func (s *Set) probe(ctx context.Context, t *target, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if s.opt.Health.Check == "dns" {
		return probeDNS(ctx, t)
	}
	c, err := s.dial(ctx, t, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	switch s.opt.Health.Check {
	case "", "tcp":
		return nil
	case "redis":
		if _, err := c.Write([]byte("PING\r\n")); err != nil {
			return err
		}
		line, err := readLine(c)
		if err != nil {
			return err
		}
		if !strings.HasPrefix(line, "+PONG") {
			return fmt.Errorf("redis answered %q", strings.TrimSpace(line))
		}
		return nil
	case "http":
		path := s.opt.Health.Path
		if path == "" {
			path = "/"
		}
		host, _, _ := net.SplitHostPort(t.Addr)
		if t.unix != "" {
			host = "localhost"
		}
		if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: protoplex-health\r\nConnection: close\r\n\r\n", path, host); err != nil {
			return err
		}
		line, err := readLine(c)
		if err != nil {
			return err
		}
		f := strings.Fields(line)
		if len(f) < 2 || (f[1][0] != '2' && f[1][0] != '3') {
			return fmt.Errorf("http answered %q", strings.TrimSpace(line))
		}
		return nil
	}
	return fmt.Errorf("unknown check %q", s.opt.Health.Check)
}

// probeDNS asks t over UDP for the root's NS records and wants an answer
// with the query's ID, whatever its code: a server that answers at all
// (REFUSED included) is up. It reads at most 512 bytes (an answer without
// EDNS fits; a longer one's header is enough).
func probeDNS(ctx context.Context, t *target) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", t.Addr)
	if err != nil {
		return err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	id := uint16(rand.Uint32())
	// Header: id, flags 0 (a query, no recursion), one question; "." NS IN.
	q := []byte{byte(id >> 8), byte(id), 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1}
	if _, err := c.Write(q); err != nil {
		return err
	}
	buf := make([]byte, 512)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		if n >= 12 && buf[0] == q[0] && buf[1] == q[1] && buf[2]&0x80 != 0 {
			return nil
		}
	}
}

// maxCheckError bounds the text kept of a failed check's error: it may
// quote what a backend answered.
const maxCheckError = 200

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// readLine reads one reply line, never more than maxReplyLine bytes from c.
func readLine(c net.Conn) (string, error) {
	line, err := bufio.NewReaderSize(io.LimitReader(c, maxReplyLine), maxReplyLine).ReadSlice('\n')
	if err == bufio.ErrBufferFull || (err == io.EOF && len(line) == maxReplyLine) {
		return "", fmt.Errorf("reply line longer than %d bytes", maxReplyLine)
	}
	if err != nil {
		return "", err
	}
	return string(line), nil
}

// pooled is a pre-dialed connection and when it was dialed.
type pooled struct {
	c  net.Conn
	at time.Time
}

func (s *Set) refillLoop(ctx context.Context, t *target) {
	defer s.wg.Done()
	maxAge := s.opt.Pool.MaxIdleTime
	if maxAge <= 0 {
		maxAge = 30 * time.Second
	}
	tick := time.NewTicker(min(maxAge/2, time.Second))
	defer tick.Stop()
	for {
		// Drop stale conns, then top up to MinIdle.
		for n := len(t.pool); n > 0; n-- {
			select {
			case p := <-t.pool:
				if s.now().Sub(p.at) > maxAge || !alive(p.c) {
					p.c.Close()
					continue
				}
				t.pool <- p
			default:
			}
		}
		for len(t.pool) < cap(t.pool) && t.downUntil.Load() <= s.now().UnixNano() {
			dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			c, err := s.dial(dctx, t, nil)
			cancel()
			if err != nil {
				break
			}
			s.created.Add(1)
			t.pool <- pooled{c: c, at: s.now()}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-t.refill:
		}
	}
}

// takePooled returns a live pre-dialed connection to t, if any.
func (s *Set) takePooled(t *target) net.Conn {
	if t.pool == nil {
		return nil
	}
	maxAge := s.opt.Pool.MaxIdleTime
	if maxAge <= 0 {
		maxAge = 30 * time.Second
	}
	for {
		select {
		case p := <-t.pool:
			if s.now().Sub(p.at) > maxAge || !alive(p.c) {
				p.c.Close()
				continue
			}
			select { // ask for a replacement now
			case t.refill <- struct{}{}:
			default:
			}
			return p.c
		default:
			return nil
		}
	}
}

// alive reports whether the server has neither closed nor written to an
// idle pooled connection: a non-blocking peek must find nothing to read.
func alive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn) // TCP or Unix
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = false
	rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := recvPeek(int(fd), b[:])
		ok = n < 0 && isEAGAIN(err) // nothing pending, not EOF
		return true
	})
	return ok
}
