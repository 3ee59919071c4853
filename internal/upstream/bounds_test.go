package upstream

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// streamingBackend answers every connection with bytes that never contain a
// newline, up to limit per connection, then holds the connection open until
// the peer closes it. written is the total the kernel accepted.
type streamingBackend struct {
	addr    string
	written atomic.Int64
}

func newStreamingBackend(t *testing.T, limit int64) *streamingBackend {
	t.Helper()
	b := &streamingBackend{}
	b.addr = testnet.Serve(t, func(c net.Conn) {
		chunk := bytes.Repeat([]byte{'x'}, 32<<10)
		for sent := int64(0); sent < limit; {
			n, err := c.Write(chunk[:min(int64(len(chunk)), limit-sent)])
			sent += int64(n)
			b.written.Add(int64(n))
			if err != nil {
				return
			}
		}
		var one [1]byte
		c.Read(one[:]) // until the prober closes
	})
	return b
}

// TestHealthProbeReplyBounded: a backend that streams bytes without a
// newline fails the probe at once (not at the probe timeout) and the prober
// reads no more than the status line bound; what the backend managed to
// write is at most that plus the loopback socket buffers.
func TestHealthProbeReplyBounded(t *testing.T) {
	const streamCap = 64 << 20 // the backend stops here, so a failing run stays bounded too
	for _, check := range []string{"http", "redis"} {
		t.Run(check, func(t *testing.T) {
			b := newStreamingBackend(t, streamCap)
			s, err := New([]Target{{Addr: b.addr, Weight: 1}}, Options{Health: HealthCheck{Interval: time.Hour, Check: check}})
			if err != nil {
				t.Fatal(err)
			}
			err = s.probe(context.Background(), s.targets[0], 10*time.Second)
			if err == nil {
				t.Fatal("probe of a backend streaming garbage succeeded")
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("probe waited for its timeout instead of failing on the bound: %v", err)
			}
			// Loopback socket buffers hold a few MiB at most; an unbounded
			// reader drains the backend's whole streamCap.
			if w := b.written.Load(); w >= streamCap {
				t.Fatalf("backend wrote %d bytes: the probe read all of it", w)
			}
		})
	}
}

// TestHealthCheckStreamingBackendMarkedDown: the check loop marks such a
// target down.
func TestHealthCheckStreamingBackendMarkedDown(t *testing.T) {
	b := newStreamingBackend(t, 64<<20)
	changed := make(chan bool, 4)
	s, err := New([]Target{{Addr: b.addr, Weight: 1}}, Options{
		Health:      HealthCheck{Interval: 20 * time.Millisecond, Timeout: time.Minute, Fall: 1, Check: "http"},
		StateChange: func(_ string, up bool) { changed <- up },
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start(context.Background())
	defer s.Close()
	select {
	case up := <-changed:
		if up {
			t.Fatal("marked up")
		}
	case <-time.After(20 * time.Second): // well inside the probe timeout: only the read bound can fail it
		t.Fatal("target not marked down")
	}
	if s.Status()[0].Up {
		t.Fatal("status says up")
	}
}

func TestPoolMinIdleCapped(t *testing.T) {
	tg := []Target{{Addr: "127.0.0.1:1", Weight: 1}}
	for _, n := range []int{MaxPoolIdle + 1, 2_000_000_000, -1} {
		if _, err := New(tg, Options{Pool: Pool{MinIdle: n}}); err == nil {
			t.Fatalf("min_idle %d accepted", n)
		}
	}
	if _, err := New(tg, Options{Pool: Pool{MinIdle: MaxPoolIdle}}); err != nil {
		t.Fatalf("min_idle %d (the cap) refused: %v", MaxPoolIdle, err)
	}
}

// refused is a port nothing listens on (below the ephemeral range, and
// privileged, so no test can take it).
const refused = "127.0.0.1:1"

// TestDialAttemptsPerConnection pins the retry policy: one attempt per
// target per connection, the targets in back-off last, and DialDone called
// once per attempt.
func TestDialAttemptsPerConnection(t *testing.T) {
	cases := []struct {
		name     string
		targets  []Target
		clients  int
		attempts map[string]int
	}{
		{"one down target", []Target{{Addr: refused, Weight: 1}}, 50, map[string]int{refused: 50}},
		{"two down targets", []Target{{Addr: refused, Weight: 1}, {Addr: "127.0.0.1:2", Weight: 1}}, 50,
			map[string]int{refused: 50, "127.0.0.1:2": 50}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			got := map[string]int{}
			s, err := New(tc.targets, Options{DialDone: func(target string, _ time.Duration, err error) {
				if err == nil {
					t.Errorf("dial to %s succeeded", target)
				}
				mu.Lock()
				got[target]++
				mu.Unlock()
			}})
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < tc.clients; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				c, _, _, err := s.Dial(ctx, nil, nil)
				cancel()
				if err == nil {
					c.Close()
					t.Fatal("dial succeeded")
				}
			}
			mu.Lock()
			defer mu.Unlock()
			for addr, want := range tc.attempts {
				if got[addr] != want {
					t.Errorf("%s: %d attempts for %d clients, want %d", addr, got[addr], tc.clients, want)
				}
			}
		})
	}
}

// TestDialFailsOverOnceToLive: a dead first target costs one attempt, then
// the live target serves; while the dead one is in back-off it is not tried.
func TestDialFailsOverOnceToLive(t *testing.T) {
	live := newCounting(t).ln.Addr().String()
	var mu sync.Mutex
	fails, served := 0, 0
	s, err := New([]Target{{Addr: refused, Weight: 1}, {Addr: live, Weight: 1}}, Options{
		Strategy: First,
		DialDone: func(target string, _ time.Duration, err error) {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				fails++
			case target == live:
				served++
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	dialN(t, s, 10)
	mu.Lock()
	defer mu.Unlock()
	if fails != 1 || served != 10 {
		t.Fatalf("failed attempts %d (want 1), live served %d (want 10)", fails, served)
	}
}

// TestTargetsCapped: a target list is at most MaxTargets long (each target
// may run a checker and a pool refiller of its own).
func TestTargetsCapped(t *testing.T) {
	many := strings.TrimSuffix(strings.Repeat("127.0.0.1:1,", MaxTargets+1), ",")
	if _, err := ParseTargets([]string{many}); err == nil {
		t.Fatalf("%d targets accepted", MaxTargets+1)
	}
	tg, err := ParseTargets([]string{strings.TrimSuffix(strings.Repeat("127.0.0.1:1,", MaxTargets), ",")})
	if err != nil || len(tg) != MaxTargets {
		t.Fatalf("%d targets (the cap): %d, %v", MaxTargets, len(tg), err)
	}
	if _, err := New(append(tg, tg[0]), Options{}); err == nil {
		t.Fatalf("New with %d targets accepted", MaxTargets+1)
	}
}
