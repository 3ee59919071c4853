//go:build unix

package config

import (
	"os"
	"syscall"
)

// openConfig opens path for reading without blocking: open(2) of a FIFO
// waits for a writer, forever if none comes. O_NONBLOCK does not change how
// a regular file is read.
func openConfig(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}
