//go:build !linux

package evloop

import (
	"context"
	"errors"
	"net"
)

// Supported reports whether this system has the event-loop data plane.
const Supported = false

// ErrUnsupported: no event loops on this system, or a listener they cannot
// serve.
var ErrUnsupported = errors.New("evloop: not supported on this system")

// Plane is not available on this system.
type Plane struct{}

// New fails: the manager keeps its goroutine path.
func New(Env, int) (*Plane, error) { return nil, ErrUnsupported }

// Serve fails at once.
func (*Plane) Serve(context.Context, net.Listener) error { return ErrUnsupported }

// Close does nothing.
func (*Plane) Close() {}

// Connections has none to list.
func (*Plane) Connections(int) []ConnInfo { return nil }
