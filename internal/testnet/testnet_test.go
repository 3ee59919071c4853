package testnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fatalTB records Fatalf instead of ending the test.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
}

func TestBackends(t *testing.T) {
	if got, err := RoundTrip(Echo(t), "ping\nmore"); err != nil || got != "ping\nmore" {
		t.Fatalf("echo: %q %v", got, err)
	}
	if got, err := RoundTrip(Banner(t, "A:"), "SSH-2.0-x\r\nrest"); err != nil || got != "A:SSH-2.0-x\r\nrest" {
		t.Fatalf("banner: %q %v", got, err)
	}
	r := Record(t, "hello")
	if got, err := RoundTrip(r.Addr, "first"); err != nil || got != "hello" {
		t.Fatalf("recorder reply: %q %v", got, err)
	}
	<-r.Arrived()
	Eventually(t, 10*time.Second, func() bool { return len(r.Received()) == 1 }, "recorder: %v", r.Received())
	if r.Accepted() != 1 || r.Received()[0] != "first" {
		t.Fatalf("recorder: %d accepted, received %q", r.Accepted(), r.Received())
	}
}

// TestServeEndsHandlers: a handler blocked reading a connection the client
// keeps open returns when the test ends, and Cleanup waits for it.
func TestServeEndsHandlers(t *testing.T) {
	var returned atomic.Bool
	t.Run("inner", func(t *testing.T) {
		started := make(chan struct{})
		addr := Serve(t, func(c net.Conn) {
			close(started)
			c.Read(make([]byte, 1))
			returned.Store(true)
		})
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		<-started
	})
	if !returned.Load() {
		t.Fatal("handler still running after the test ended")
	}
}

func TestStart(t *testing.T) {
	var addr string
	t.Run("inner", func(t *testing.T) {
		addr = Start(t, func(ctx context.Context, ln net.Listener) error {
			go func() { <-ctx.Done(); ln.Close() }()
			for {
				c, err := ln.Accept()
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
				c.Write([]byte("hi"))
				c.Close()
			}
		})
		if got, err := RoundTrip(addr, ""); err != nil || got != "hi" {
			t.Fatalf("%q %v", got, err)
		}
		if !Listening(addr) {
			t.Fatal("not listening")
		}
	})
	if Listening(addr) {
		t.Fatal("still listening after the test ended")
	}
	// A server that fails has its error reported when the test ends.
	rec := &errorTB{TB: t}
	Start(rec, func(context.Context, net.Listener) error { return errors.New("boom") })
	rec.cleanup()
	if !strings.Contains(rec.msg, "boom") {
		t.Fatalf("serve error not reported: %q", rec.msg)
	}
}

// errorTB records Errorf and runs its cleanups on demand.
type errorTB struct {
	testing.TB
	msg      string
	cleanups []func()
}

func (e *errorTB) Helper()                   {}
func (e *errorTB) Cleanup(f func())          { e.cleanups = append(e.cleanups, f) }
func (e *errorTB) Errorf(f string, a ...any) { e.msg = fmt.Sprintf(f, a...) }
func (e *errorTB) cleanup() {
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		e.cleanups[i]()
	}
}

func TestEventually(t *testing.T) {
	n := 0
	Eventually(t, 10*time.Second, func() bool { n++; return n == 3 }, "never")
	f := &fatalTB{TB: t}
	var b Buffer
	start := time.Now()
	calls := 0
	Eventually(f, 50*time.Millisecond, func() bool { calls++; b.Write([]byte("x")); return false },
		"cond false; buffer %s; %s", &b, Later(func() string { return fmt.Sprintf("calls %d", calls) }))
	want := fmt.Sprintf("cond false; buffer %s; calls %d (not within 50ms)", strings.Repeat("x", calls), calls)
	if time.Since(start) < 50*time.Millisecond || calls < 2 || f.msg != want {
		t.Fatalf("after %v: %q", time.Since(start), f.msg)
	}
}

func TestFreePort(t *testing.T) {
	ln, err := net.Listen("tcp", FreeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
}

func TestProcess(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("uses sh")
	}
	sh := RequireBinary(t, "sh")
	p := StartProcess(t, exec.Command(sh, "-c", "echo out; echo err >&2; exec sleep 60"))
	Eventually(t, 10*time.Second, func() bool { return strings.Contains(p.Out.String(), "err") }, "output: %s", p.Out)
	p.Stop()
	p.Stop()
	if p.Wait() == nil {
		t.Fatal("killed process reported success")
	}
	if !strings.Contains(p.Out.String(), "out\n") {
		t.Fatalf("stdout not collected: %q", p.Out)
	}
	q := StartProcess(t, exec.Command(sh, "-c", "exit 0"))
	if err := q.Wait(); err != nil {
		t.Fatal(err)
	}
}

// TestEachTCPSocket finds a listener, both ends of a connection to it and,
// once the client closed first, its TIME_WAIT.
func TestEachTCPSocket(t *testing.T) {
	if runtime.GOOS != "linux" {
		if err := EachTCPSocket(func(Socket) {}); err == nil {
			t.Fatal("no error without /proc/net/tcp")
		}
		t.Skip("/proc/net/tcp is Linux's")
	}
	ln := Listen(t)
	server := netip.MustParseAddrPort(ln.Addr().String())
	c, err := net.Dial("tcp", server.String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	client := netip.MustParseAddrPort(c.LocalAddr().String())
	find := func(want Socket) bool {
		found := false
		if err := EachTCPSocket(func(s Socket) { found = found || s == want }); err != nil {
			t.Fatal(err)
		}
		return found
	}
	for _, want := range []Socket{
		{Local: server, Remote: netip.AddrPortFrom(netip.IPv4Unspecified(), 0), State: StateListen},
		{Local: client, Remote: server, State: StateEstablished},
		{Local: server, Remote: client, State: StateEstablished},
	} {
		if !find(want) {
			t.Errorf("no socket %+v", want)
		}
	}
	c.Close()
	sc.Close()
	Eventually(t, 10*time.Second, func() bool { return find(Socket{Local: client, Remote: server, State: StateTimeWait}) },
		"the client's socket never reached TIME_WAIT")
}

// TestEtcd: etcd serves on Client, and again on the same address after a
// Stop and Start.
func TestEtcd(t *testing.T) {
	e := StartEtcd(t)
	e.Stop()
	if Listening(e.Client) {
		t.Fatal("still listening after Stop")
	}
	e.Start()
	if !e.answers() {
		t.Fatal("no answer after a restart")
	}
}
