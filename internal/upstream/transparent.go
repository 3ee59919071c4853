package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
)

// ErrTransparentUnsupported is returned where transparent dialing does not
// exist: IP_TRANSPARENT is Linux only.
var ErrTransparentUnsupported = errors.New("transparent mode is supported on Linux only")

// checkTransparent refuses options transparent dialing cannot honour: a
// pooled connection is dialed before any client exists, and a source
// address would contradict the client's.
func checkTransparent(opt Options) error {
	if !opt.Transparent {
		return nil
	}
	if !transparentSupported {
		return ErrTransparentUnsupported
	}
	if len(opt.Source) > 0 {
		return errors.New("transparent does not combine with source addresses: backend connections come from the client's address")
	}
	if opt.Pool.MinIdle > 0 {
		return errors.New("transparent does not combine with a warm pool: a pooled connection is dialed before its client's address is known")
	}
	return nil
}

// dialTransparent dials t from client's IP address with IP_TRANSPARENT
// (IPV6_TRANSPARENT), so the backend sees the client as the peer. The
// port is not the client's: the socket binds the IP with port 0 and
// IP_BIND_ADDRESS_NO_PORT, and connect() picks a port unique for the
// 4-tuple (as HAProxy's "usesrc clientip"). Reusing the client's port would
// fail whenever that client also talks to the backend directly, or two of
// its connections reach the same backend from one port through different
// listeners; the backend's logs and ACLs use the IP. The reply traffic must
// be routed back to this host (docs/transparent.md).
func (s *Set) dialTransparent(ctx context.Context, t *target, client net.Addr) (net.Conn, error) {
	ap := addrPort(client)
	if !ap.IsValid() {
		return nil, fmt.Errorf("transparent: client address %v is not an IP address", client)
	}
	src := ap.Addr().Unmap()
	if t.ip.IsValid() && t.ip.Addr().Is4() != src.Is4() {
		return nil, fmt.Errorf("transparent: client %s and target %s are of different address families", src, t.Addr)
	}
	d := s.dialer
	d.Control = transparentControl
	c, err := s.dialFrom(ctx, d, t, src)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// addrIs4 reports whether a dial's network is IPv4 ("tcp4").
func addrIs4(network string) bool { return strings.HasSuffix(network, "4") }
