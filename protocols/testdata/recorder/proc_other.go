//go:build !unix

package main

import "os/exec"

// killProcessGroup leaves cmd as it is: without Unix process groups only
// the command itself is killed when its context ends, not the processes it
// started.
func killProcessGroup(*exec.Cmd) {}
