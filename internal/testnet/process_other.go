//go:build !unix

package testnet

import "os/exec"

// ownGroup does nothing: without process groups only the process itself is
// killed.
func ownGroup(*exec.Cmd) {}

// killGroup kills the process.
func killGroup(cmd *exec.Cmd) {
	cmd.Process.Kill()
}
