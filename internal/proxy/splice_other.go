//go:build !linux

package proxy

import "net"

// Without splice, TCP conns take the portable buffered copy, which does not
// watch a source while its write is blocked: a reset there ends the pair
// only when the destination drains or the idle timeout fires.

type pipeSource interface{}

var sharedPipes pipeSource

var spliceToPipe func(sock, pipeW int) (int, error)

func spliceCopy(dst, src *net.TCPConn, p *pair) (int64, error) { return bufferedCopy(dst, src, p) }
