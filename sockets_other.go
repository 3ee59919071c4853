//go:build !linux

package protoplex

import (
	"errors"
	"net"
)

// Sockets is not available on this system: an upgrade hands sockets over
// on Linux only.
func (pm *ProtocolManager) Sockets(...net.Listener) ([]Socket, error) {
	return nil, errors.New("protoplex: handing sockets over needs Linux")
}

// SocketsHandedOver does nothing on this system.
func (pm *ProtocolManager) SocketsHandedOver() {}
