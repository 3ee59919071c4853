//go:build !unix

package udp

import (
	"errors"
	"net"
)

// readReplies calls fn with each datagram up receives until up is closed.
// Off unix the flow's reader holds its own 64 KiB buffer while it waits.
func readReplies(up upConn, fn func([]byte)) {
	buf := make([]byte, maxDatagram)
	for {
		n, err := up.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// An ICMP error for an earlier datagram: the flow goes on.
			continue
		}
		fn(buf[:n])
	}
}
