package evloop_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind: a loop,
// a dial made off the loop, a handler, a backend.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
