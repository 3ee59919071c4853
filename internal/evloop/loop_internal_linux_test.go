//go:build linux

package evloop

import (
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const bound = 10 * time.Second

// TestPostAfterStop: once a loop has stopped, a post neither runs nor
// writes to the number its wake descriptor had — another descriptor may
// hold it now — and a call returns instead of waiting forever.
func TestPostAfterStop(t *testing.T) {
	p, err := New(Env{}, 1)
	if err != nil {
		t.Fatal(err)
	}
	l := p.loops[0]
	wake := l.wake
	p.Close()

	// The number the wake descriptor had now names another eventfd.
	if _, err := unix.FcntlInt(uintptr(wake), unix.F_GETFD, 0); err == nil {
		t.Skipf("descriptor %d was taken by another part of the process", wake)
	}
	other, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if other != wake {
		if err := unix.Dup3(other, wake, unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		unix.Close(other)
	}
	defer unix.Close(wake)

	if l.post(func() { t.Error("a post ran on a stopped loop") }) {
		t.Error("post on a stopped loop reported success")
	}
	var b [8]byte
	if n, _ := unix.Read(wake, b[:]); n > 0 {
		t.Errorf("a post to a stopped loop wrote %d bytes into descriptor %d, which it no longer owns", n, wake)
	}
	done := make(chan error, 1)
	go func() { done <- l.call(func() { t.Error("a call ran on a stopped loop") }) }()
	select {
	case err := <-done:
		if err != ErrClosed {
			t.Errorf("call on a stopped loop: %v, want ErrClosed", err)
		}
	case <-time.After(bound):
		t.Fatalf("a call on a stopped loop did not return within %v", bound)
	}
	p.Close() // again: nothing to do
}

// fakeClock is a clock a test moves.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// TestAfterOnLoopClock: timed work on a loop (the accept back-off) is a
// timer in the loop's heap, read against the loop's clock: it runs on the
// loop once that clock passes its deadline, however little wall-clock
// time went by, and never before.
func TestAfterOnLoopClock(t *testing.T) {
	clock := newFakeClock()
	p, err := New(Env{Now: clock.Now}, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	l := p.loops[0]
	ran := make(chan struct{}, 2)
	if err := l.call(func() { l.after(time.Hour, func() { ran <- struct{}{} }) }); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour - time.Second)
	if err := l.call(func() {}); err != nil { // wakes the loop: it fires what is due
		t.Fatal(err)
	}
	if err := l.call(func() {}); err != nil { // the timers of the iteration above have run
		t.Fatal(err)
	}
	if len(ran) != 0 {
		t.Fatal("the back-off ran before the loop's clock reached it")
	}
	clock.Advance(time.Second)
	if err := l.call(func() {}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ran:
	case <-time.After(bound):
		t.Fatalf("the back-off did not run within %v of the loop's clock passing it", bound)
	}
}

// TestRunTasksNoneDue: a wake while tasks wait but none is due (a UDP
// listener's sweep waits on every loop) neither runs nor reallocates them;
// a due one runs once, and one it adds waits.
func TestRunTasksNoneDue(t *testing.T) {
	l := &Loop{now: time.Unix(0, 0)}
	ran := 0
	l.after(time.Second, func() { ran++; l.after(time.Second, func() { ran += 10 }) })
	l.after(2*time.Second, func() { ran += 100 })
	if allocs := testing.AllocsPerRun(100, func() { l.runTasks(int64(time.Second) - 1) }); allocs != 0 {
		t.Errorf("runTasks with none due: %v allocations, want 0", allocs)
	}
	if ran != 0 || len(l.tasks) != 2 {
		t.Fatalf("none due: ran %d, %d tasks; want 0, 2", ran, len(l.tasks))
	}
	l.runTasks(int64(time.Second))
	if ran != 1 || len(l.tasks) != 2 {
		t.Fatalf("one due: ran %d, %d tasks; want 1, 2", ran, len(l.tasks))
	}
}

// TestBeforeWait: work added with BeforeWait runs on the loop after each
// round, before it waits (a post's round too), and no more once removed;
// the others stay.
func TestBeforeWait(t *testing.T) {
	p, err := New(Env{}, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	l := p.loops[0]
	u := udpLoop{l}
	var a, b atomic.Int32
	var removeA func()
	if err := l.call(func() {
		removeA = u.BeforeWait(func() { a.Add(1) })
		u.BeforeWait(func() { b.Add(1) })
	}); err != nil {
		t.Fatal(err)
	}
	// A call returns once its fn ran, before its round's end: post
	// rounds until both ran.
	deadline := time.Now().Add(bound)
	for (a.Load() == 0 || b.Load() == 0) && time.Now().Before(deadline) {
		_ = l.call(func() {})
	}
	if a.Load() == 0 || b.Load() == 0 {
		t.Fatalf("before-wait work ran %d and %d times", a.Load(), b.Load())
	}
	var atA int32
	if err := l.call(func() { removeA(); atA = a.Load() }); err != nil {
		t.Fatal(err)
	}
	atB := b.Load()
	for b.Load() < atB+2 && time.Now().Before(deadline) {
		_ = l.call(func() {})
	}
	if a.Load() != atA {
		t.Errorf("removed work ran %d more times", a.Load()-atA)
	}
	if b.Load() < atB+2 {
		t.Errorf("the other work ran %d times in the later rounds, want 2 or more", b.Load()-atB)
	}
	if err := l.call(func() {
		if len(l.beforeWait) != 1 {
			t.Errorf("%d before-wait functions held, want 1", len(l.beforeWait))
		}
	}); err != nil {
		t.Fatal(err)
	}
}
