package listen

import (
	"errors"
	"net"
	"strconv"
)

// An address of server.listen_udp is bound by several SO_REUSEPORT
// sockets, and the kernel spreads its clients over them by their place in
// the group. An upgrade hands every one over, in order (the first under
// the address's Key, the others under ExtraKey), so that the group, and
// the socket each client reaches, stays the same across it.

// ExtraKey is the key the i-th (from 1) further socket of the address
// handed over as key is handed over under.
func ExtraKey(key string, i int) string { return key + " #" + strconv.Itoa(i) }

// PacketGroup is the sockets handed over for one address, in their order.
type PacketGroup struct {
	net.PacketConn // the first
	Others         []net.PacketConn
}

// Sockets is the group's sockets, the first first.
func (g *PacketGroup) Sockets() []net.PacketConn {
	return append([]net.PacketConn{g.PacketConn}, g.Others...)
}

// Close closes every socket of the group.
func (g *PacketGroup) Close() error {
	var errs []error
	for _, c := range g.Others {
		errs = append(errs, c.Close())
	}
	return errors.Join(append(errs, g.PacketConn.Close())...)
}

// packetGroup takes the further sockets handed over beside first for
// addr: first alone (an older process handed over one) is returned as it
// is.
func (in *Inherited) packetGroup(first net.PacketConn, addr string) (net.PacketConn, bool, error) {
	g := &PacketGroup{PacketConn: first}
	for i := 1; ; i++ {
		f := in.take(ExtraKey(Key(RoleListenUDP, addr), i))
		if f == nil {
			break
		}
		pc, err := net.FilePacketConn(f)
		f.Close() // pc holds its own duplicate
		if err != nil {
			g.Close()
			return nil, true, err
		}
		g.Others = append(g.Others, pc)
	}
	if len(g.Others) == 0 {
		return first, true, nil
	}
	return g, true, nil
}
