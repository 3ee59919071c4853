//go:build unix

package main

import "syscall"

// raiseNoFile lifts the open-file limit to its hard maximum: every
// connection the load generator holds is a descriptor.
func raiseNoFile() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}
