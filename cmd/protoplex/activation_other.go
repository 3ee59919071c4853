//go:build !unix

package main

import (
	"net"
	"os"
)

// streamListening reports whether f is a socket that listens, as far as
// net.FileListener can tell (socket activation is a Unix protocol).
func streamListening(f *os.File) bool {
	ln, err := net.FileListener(f)
	if err == nil {
		ln.Close()
	}
	return err == nil
}
