package testnet

import (
	"fmt"
	"testing"
	"time"
)

// Tick is how often Eventually polls.
const Tick = 10 * time.Millisecond

// Eventually calls cond every Tick until it returns true, and fails the
// test with the message of format and args when timeout passes first.
// Args are formatted at the failure, so a *Buffer passed as an argument
// shows what it holds then. Choose timeouts for a loaded machine: the
// bound only matters when the test fails.
func Eventually(tb testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(Tick)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("%s (not within %v)", fmt.Sprintf(format, args...), timeout)
			return
		}
		<-tick.C
	}
}

// Later is an argument to Eventually's message that is computed when the
// message is formatted, at the failure: testnet.Later(func() string { ... }).
type Later func() string

func (f Later) String() string { return f() }
