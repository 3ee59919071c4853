//go:build unix

package listen

import (
	"errors"
	"syscall"
)

// refused reports whether a dial of a socket file found nobody listening.
func refused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
