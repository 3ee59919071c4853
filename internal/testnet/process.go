package testnet

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
)

// Process is a subprocess the test owns. It runs in a process group of its
// own where the OS has them, so that Stop also ends what it started (a
// daemon's workers, a shell's children).
type Process struct {
	Cmd *exec.Cmd
	Out *Buffer // what the process wrote to the stdout and stderr it was given

	exited chan struct{}
	err    error // Cmd.Wait's result, set before exited is closed
	once   sync.Once
}

// StartProcess starts cmd; its stdout and stderr, where cmd leaves them nil,
// go to Out. The process (with its group) is killed and reaped when the
// test ends, or earlier by Stop.
func StartProcess(tb testing.TB, cmd *exec.Cmd) *Process {
	tb.Helper()
	p := &Process{Cmd: cmd, Out: &Buffer{}, exited: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = p.Out
	}
	if cmd.Stderr == nil {
		cmd.Stderr = p.Out
	}
	ownGroup(cmd)
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", cmd.Path, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	tb.Cleanup(p.Stop)
	return p
}

// Exited is closed when the process has exited and been reaped.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Wait waits for the process to exit and returns what exec.Cmd.Wait did.
func (p *Process) Wait() error {
	<-p.exited
	return p.err
}

// Stop kills the process and its group and waits until it is reaped. It
// may be called more than once.
func (p *Process) Stop() {
	p.once.Do(func() {
		select {
		case <-p.exited:
		default:
			killGroup(p.Cmd)
		}
	})
	<-p.exited
}

// RequireBinary returns the path of the program name, looked up in PATH
// unless name holds a slash. Where it is missing the test is skipped, or
// fails under PROTOPLEX_REQUIRE_PEERS=1 (make test), where every real peer
// must run.
func RequireBinary(tb testing.TB, name string) string {
	tb.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		msg := fmt.Sprintf("%s not installed (run scripts/install-test-deps.sh)", name)
		if os.Getenv("PROTOPLEX_REQUIRE_PEERS") == "1" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	return path
}
