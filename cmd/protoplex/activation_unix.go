//go:build unix

package main

import (
	"os"
	"syscall"
)

// streamListening reports whether f is a stream socket that listens
// (SO_TYPE, SO_ACCEPTCONN). net.FileListener takes any Unix socket, a
// datagram one too, whose accept then fails for ever.
func streamListening(f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	rc.Control(func(fd uintptr) {
		typ, err1 := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TYPE)
		acc, err2 := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN)
		ok = err1 == nil && err2 == nil && typ == syscall.SOCK_STREAM && acc == 1
	})
	return ok
}
