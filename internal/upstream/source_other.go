//go:build !linux

package upstream

import "syscall"

// bindAddressNoPort: elsewhere bind(source, 0) picks the port itself.
var bindAddressNoPort func(network, address string, c syscall.RawConn) error
