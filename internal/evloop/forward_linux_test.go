//go:build linux

package evloop_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/protocols"
)

// TestForwardByteExact: what the client sends reaches the backend and what
// the backend sends reaches the client, byte for byte, and the client's
// half-close reaches the backend (the echo ends only then). A small
// exchange takes the loop's buffer in one read; 8 MiB goes on through a
// splice pipe from SpliceAfter on, and the same bytes arrive whether the
// pipe is taken at once, after the default threshold or never.
func TestForwardByteExact(t *testing.T) {
	for _, tc := range []struct {
		name        string
		size        int
		spliceAfter int64
	}{
		{"small", 1000, 0},
		{"8MiB splice early", 8 << 20, 1},
		{"8MiB splice default", 8 << 20, 0},
		{"8MiB never splice", 8 << 20, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			echo := testnet.Echo(t)
			r := newRig(t, []*protocols.Protocol{route("ECHO", echo)}, func(s *setup) { s.env.SpliceAfter = tc.spliceAfter })
			want := payload(tc.size)
			sameBytes(t, "echo", r.exchange(want), want)
			r.waitMetric(1, "protoplex_connections_closed_total", "protocol=ECHO", "reason=done")
			r.idle()
			for _, d := range []string{"client_to_backend", "backend_to_client"} {
				if got := r.metric("protoplex_forwarded_bytes_total", "protocol=ECHO", "direction="+d); got != float64(tc.size) {
					t.Errorf("forwarded %s = %v, want %d", d, got, tc.size)
				}
			}
			if got := r.metric("protoplex_pipe_fallbacks_total"); got != 0 {
				t.Errorf("pipe fallbacks = %v: the splice path was not taken", got)
			}
		})
	}
}

// TestBackendClosesFirst: a backend that answers and closes at once — the
// client gets the whole answer, then EOF, while its own side is still open.
func TestBackendClosesFirst(t *testing.T) {
	answer := payload(300 << 10)[5:] // past the splice threshold
	backend := testnet.Serve(t, func(c net.Conn) {
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		c.Write(answer)
		// ServeOn closes c: a FIN after the answer.
	})
	r := newRig(t, []*protocols.Protocol{route("ANSWER", backend)})
	c := r.dial()
	if _, err := c.Write([]byte("HELLO")); err != nil {
		t.Fatal(err)
	}
	got, err := readAll(c)
	if err != nil {
		t.Fatalf("read after %d bytes: %v", len(got), err)
	}
	sameBytes(t, "answer", got, answer)
	c.Close()
	r.idle()
	if got := r.closed("ANSWER", "done") + r.closed("ANSWER", "error"); got != 1 {
		t.Errorf("closed = %v, want 1", got)
	}
}

// TestClientClosesFirst: a client that sends its request and closes —
// the backend gets the whole request, then EOF.
func TestClientClosesFirst(t *testing.T) {
	request := payload(300 << 10)
	received := make(chan []byte, 1)
	backend := testnet.Serve(t, func(c net.Conn) {
		b, _ := readAll(c)
		received <- b
	})
	r := newRig(t, []*protocols.Protocol{route("REQUEST", backend)})
	c := r.dial()
	if _, err := c.Write(request); err != nil {
		t.Fatal(err)
	}
	c.Close()
	select {
	case b := <-received:
		sameBytes(t, "request", b, request)
	case <-time.After(bound):
		t.Fatal("the backend did not see the request end")
	}
	r.waitMetric(1, "protoplex_connections_closed_total", "protocol=REQUEST", "reason=done")
	r.idle()
}

// TestIdleTimeout: a forwarded pair silent both ways for the route's idle
// timeout is closed and counted as idle_timeout.
func TestIdleTimeout(t *testing.T) {
	const idle = 100 * time.Millisecond
	p := route("IDLE", testnet.Echo(t))
	p.IdleTimeout = idle
	r := newRig(t, []*protocols.Protocol{p})
	c := r.echoed()
	silent := time.Now()
	if b, err := readAll(c); err != nil || len(b) > 0 {
		t.Fatalf("after the echo: %q, %v; want EOF", b, err)
	}
	if d := time.Since(silent); d < idle/2 {
		t.Errorf("closed %v after the last byte, before the idle timeout %v", d, idle)
	}
	r.waitMetric(1, "protoplex_connections_closed_total", "protocol=IDLE", "reason=idle_timeout")
	r.idle()
}

// TestSlowReaderNotIdle: a client that reads a long answer slowly keeps
// the pair busy, though it never sends a byte after its first and takes
// several idle timeouts to read the answer: bytes moving towards it are
// activity. The sockets between the plane and the client hold little, so
// the plane moves bytes every time the client reads, and a pair wrongly
// taken for idle is cut: the answer arrives short.
//
// A client that itself stops reading for the idle timeout (a loaded
// machine not running it) makes the pair idle for real: such a try proves
// nothing and is made again.
func TestSlowReaderNotIdle(t *testing.T) {
	const idle = 400 * time.Millisecond // a backend or plane not run for this long on a loaded machine is idle for real
	for _, tc := range []struct {
		name        string
		spliceAfter int64
	}{{"splice", 0}, {"buffer", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			for try := 1; ; try++ {
				pause, err := slowRead(t, idle, tc.spliceAfter)
				switch {
				case err == nil:
					return
				case pause < idle/2:
					t.Fatal(err)
				case try == 5:
					t.Fatalf("the client paused up to %v between reads in every try: %v", pause, err)
				}
				t.Logf("try %d: the client paused %v between reads, the pair was idle: %v", try, pause, err)
			}
		})
	}
}

// slowRead is one try of TestSlowReaderNotIdle: what went wrong, and the
// longest the client paused between two reads of its own.
func slowRead(t *testing.T, idle time.Duration, spliceAfter int64) (pause time.Duration, err error) {
	const (
		slow  = 16 << 20
		size  = 2 * slow
		chunk = 256 << 10
		pace  = 20 * time.Millisecond // 64 reads: over 3 idle timeouts
	)
	answer := payload(size)
	backend := testnet.Serve(t, func(c net.Conn) {
		if _, err := io.ReadFull(c, make([]byte, 5)); err != nil {
			return
		}
		c.Write(answer)
	})
	p := route("SLOW", backend)
	p.IdleTimeout = idle
	r := newRig(t, []*protocols.Protocol{p}, func(s *setup) {
		s.env.SpliceAfter = spliceAfter
		s.sndbuf = 64 << 10
	})
	d := net.Dialer{Timeout: bound, Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { // before connect, so the window never shrinks
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 128<<10)
		})
	}}
	nc, err := d.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(4 * bound))
	if _, err := nc.Write([]byte("HELLO")); err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(pace)
	defer tick.Stop()
	got := make([]byte, size)
	last := time.Now()
	for off := 0; off < size && err == nil; off += chunk {
		pause = max(pause, time.Since(last))
		_, err = io.ReadFull(nc, got[off:off+chunk])
		last = time.Now()
		if err != nil {
			err = fmt.Errorf("read after %d bytes: %v", off, err)
		} else if off < slow {
			<-tick.C
		}
	}
	if err == nil {
		if _, rerr := nc.Read(make([]byte, 1)); rerr != io.EOF {
			err = fmt.Errorf("after the answer: %v, want EOF", rerr)
		}
	}
	nc.Close() // at once: a pair left half-open is idle
	r.idle()
	if n := r.closed("SLOW", "idle_timeout"); err == nil && n != 0 {
		err = fmt.Errorf("closed as idle")
	}
	if err != nil {
		return pause, fmt.Errorf("%v; log:\n%s", err, r.log)
	}
	sameBytes(t, "answer", got, answer)
	if n := r.closed("SLOW", "done"); n != 1 {
		t.Errorf("closed done = %v, want 1; log:\n%s", n, r.log)
	}
	return pause, nil
}

// TestResetWhileBackendStalls: a backend that accepts and never reads, a
// client that uploads until everything between them is full and then
// resets. The pair ends at once with reason error — nothing will ever be
// read from the client again — and both sockets are closed: the backend
// reads the bytes it was given, then EOF.
func TestResetWhileBackendStalls(t *testing.T) {
	for _, tc := range []struct {
		name        string
		spliceAfter int64
	}{{"splice", 0}, {"buffer", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			reset := make(chan struct{})
			backendEnd := make(chan error, 1)
			backend := testnet.Serve(t, func(c net.Conn) {
				select {
				case <-reset:
				case <-time.After(bound):
				}
				_, err := readAll(c)
				backendEnd <- err
			})
			p := route("STALL", backend)
			p.IdleTimeout = time.Hour
			r := newRig(t, []*protocols.Protocol{p}, func(s *setup) { s.env.SpliceAfter = tc.spliceAfter })
			c := r.dial()
			chunk := payload(256 << 10)
			for {
				// A chunk the sockets do not take within the write deadline:
				// they are full, and the plane holds bytes the backend does
				// not read.
				_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
				if _, err := c.Write(chunk); err != nil {
					if !errors.Is(err, os.ErrDeadlineExceeded) {
						t.Fatalf("upload: %v", err)
					}
					break
				}
			}
			_ = c.SetLinger(0)
			c.Close()
			r.waitMetric(1, "protoplex_connections_closed_total", "protocol=STALL", "reason=error")
			r.idle()
			close(reset)
			if err := waitFor(backendEnd); err != nil {
				t.Errorf("backend: %v (want EOF after the bytes it was given)", err)
			}
		})
	}
}
