package proxyproto

import (
	"errors"
	"net"
	"time"
)

// Read reads the PROXY header a trusted front sends at the start of c into
// buf, within timeout. It returns the header and how many of the bytes read
// after it (the client's first bytes) it moved to the start of buf.
//
// The header must fit in buf: one that announces (v2) or runs (v1, over
// MaxV1Len) longer is refused as soon as that is known, with ErrInvalid,
// rather than at the deadline. Bytes that are no PROXY header give
// ErrNotProxy; a read error or the deadline before the header is whole
// gives that error. The read deadline of c is cleared on return.
func Read(c net.Conn, buf []byte, timeout time.Duration) (h Header, rest int, err error) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	n := 0
	for n < len(buf) {
		m, rerr := c.Read(buf[n:])
		n += m
		h, hlen, perr := Parse(buf[:n])
		if perr == nil {
			return h, copy(buf, buf[hlen:n]), nil
		}
		if !errors.Is(perr, ErrIncomplete) {
			return Header{}, 0, perr
		}
		if announcedLen(buf[:n]) > len(buf) {
			return Header{}, 0, ErrInvalid
		}
		if rerr != nil {
			return Header{}, 0, rerr
		}
	}
	return Header{}, 0, ErrInvalid // buf full before the header ended
}
