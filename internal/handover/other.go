//go:build !linux

package handover

import (
	"errors"
	"os"
	"time"
)

// Supported reports whether this system can hand sockets over.
const Supported = false

// ErrUnsupported: no handover on this system.
var ErrUnsupported = errors.New("handover: not supported on this system")

// Limits bound what a Conn receives and how long it waits.
type Limits struct {
	MaxTotalFDs int
	Timeout     time.Duration
}

// Conn is not available on this system.
type Conn struct{}

// Pair fails.
func Pair(Limits) (*Conn, *os.File, error) { return nil, nil, ErrUnsupported }

// FileConn fails.
func FileConn(f *os.File, _ Limits) (*Conn, error) { f.Close(); return nil, ErrUnsupported }

// Close does nothing.
func (*Conn) Close() error { return nil }

// CloseRead does nothing.
func (*Conn) CloseRead() error { return nil }

// Send fails.
func (*Conn) Send(Message, []int) error { return ErrUnsupported }

// Recv fails.
func (*Conn) Recv() (Message, []*os.File, error) { return Message{}, nil, ErrUnsupported }
