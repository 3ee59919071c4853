package listen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/darkit/protoplex/internal/testnet"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder serves by accepting until ctx ends, and records how each loop
// ended.
type recorder struct {
	mu    sync.Mutex
	ended map[string]error // listener address → cancel cause
}

func (r *recorder) serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			break
		}
		c.Close()
	}
	r.mu.Lock()
	r.ended[ln.Addr().String()] = context.Cause(ctx)
	r.mu.Unlock()
	return nil
}

// freeAddr is a loopback address nothing listens on.
func freeAddr(t *testing.T) string { return fmt.Sprintf("127.0.0.1:%d", testnet.FreePort(t)) }

func TestRebind(t *testing.T) {
	r := &recorder{ended: map[string]error{}}
	s := NewSet(r.serve, func(a string, err error) { t.Errorf("%s: %v", a, err) })
	ctx, cancel := context.WithCancel(context.Background())
	a, b := freeAddr(t), freeAddr(t)
	if err := s.Start(ctx, []string{a}); err != nil {
		t.Fatal(err)
	}
	// A reload to {b}: b is bound while the reload is checked, then a stops
	// with ErrRemoved.
	if err := s.Prepare([]string{b}); err != nil {
		t.Fatal(err)
	}
	if c, err := net.Dial("tcp", b); err != nil {
		t.Fatalf("b not bound by Prepare: %v", err)
	} else {
		c.Close()
	}
	s.Commit([]string{b})
	if got := s.Addrs(); len(got) != 1 || got[0].String() != b {
		t.Fatalf("serving %v, want [%s]", got, b)
	}
	cancel()
	s.Wait()
	if !errors.Is(r.ended[a], ErrRemoved) || errors.Is(r.ended[b], ErrRemoved) {
		t.Fatalf("causes: a %v, b %v", r.ended[a], r.ended[b])
	}
}

// TestPrepareFailureBindsNothing: a reload with one address that cannot be
// bound leaves nothing of it bound, and the served set unchanged.
func TestPrepareFailureBindsNothing(t *testing.T) {
	r := &recorder{ended: map[string]error{}}
	s := NewSet(r.serve, func(string, error) {})
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); s.Wait() }()
	a, b := freeAddr(t), freeAddr(t)
	if err := s.Start(ctx, []string{a}); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	err = s.Prepare([]string{a, b, busy.Addr().String()})
	if err == nil || !strings.Contains(err.Error(), "server.listen") {
		t.Fatalf("Prepare with a busy address: %v", err)
	}
	if ln, err := net.Listen("tcp", b); err != nil {
		t.Fatalf("b stayed bound after the failed Prepare: %v", err)
	} else {
		ln.Close()
	}
	if got := s.Addrs(); len(got) != 1 || got[0].String() != a {
		t.Fatalf("serving %v, want [%s]", got, a)
	}
}

// TestReleaseClosesPending: a checked reload that is then rejected
// releases the addresses it bound.
func TestReleaseClosesPending(t *testing.T) {
	s := NewSet(func(context.Context, net.Listener) error { return nil }, func(string, error) {})
	a := freeAddr(t)
	if err := s.Prepare([]string{a}); err != nil {
		t.Fatal(err)
	}
	s.Release()
	ln, err := net.Listen("tcp", a)
	if err != nil {
		t.Fatalf("still bound after Release: %v", err)
	}
	ln.Close()
}
