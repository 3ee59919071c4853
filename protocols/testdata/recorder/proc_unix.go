//go:build unix

package main

import (
	"os/exec"
	"syscall"
)

// killProcessGroup makes cmd the leader of a new process group and, when
// its context ends, kills the whole group, so that a client started by a
// wrapper (sh -c, xvfb-run) stops with it.
func killProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}
