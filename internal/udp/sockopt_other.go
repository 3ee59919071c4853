//go:build !linux

package udp

import "syscall"

// reusePortOK: elsewhere SO_REUSEPORT does not spread datagrams (BSDs give
// them to the last socket bound), so each address has one socket.
const reusePortOK = false

func reusePort(_, _ string, _ syscall.RawConn) error { return nil }
