package upstream

import (
	"errors"
	"fmt"
	"syscall"
)

// IP_TRANSPARENT and IPV6_TRANSPARENT (linux/in.h, linux/in6.h).
const (
	ipTransparent   = 19
	ipv6Transparent = 75
)

const transparentSupported = true

// transparentControl lets the socket bind an address that is not local
// (the client's) and leaves the port to connect().
func transparentControl(network, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if addrIs4(network) {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipTransparent, 1)
		} else {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IPV6, ipv6Transparent, 1)
		}
		if serr == nil {
			syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1) // best effort, as bindAddressNoPort
		}
	})
	if err != nil {
		return err
	}
	if errors.Is(serr, syscall.EPERM) {
		return fmt.Errorf("transparent mode needs CAP_NET_ADMIN: setsockopt IP_TRANSPARENT: %w", serr)
	}
	if serr != nil {
		return fmt.Errorf("setsockopt IP_TRANSPARENT: %w", serr)
	}
	return nil
}
