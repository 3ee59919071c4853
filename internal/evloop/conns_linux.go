package evloop

import (
	"net"

	"golang.org/x/sys/unix"
)

// Connections is a snapshot of at most limit (and at most MaxSnapshot) of
// the plane's connections, each loop's oldest first. Each loop copies its
// own under call, so nothing the loop owns is read elsewhere; a stopped
// loop has none.
func (p *Plane) Connections(limit int) []ConnInfo {
	limit = min(limit, MaxSnapshot)
	var out []ConnInfo
	for _, l := range p.loops {
		if len(out) >= limit {
			break
		}
		_ = l.call(func() { out = l.snapshot(out, limit) })
	}
	return out
}

// snapshot appends the loop's connections to out until it holds limit.
func (l *Loop) snapshot(out []ConnInfo, limit int) []ConnInfo {
	for c := l.conns.Front(); c != nil && len(out) < limit; c = l.conns.Next(c) {
		if c.st == stDone {
			continue
		}
		out = append(out, c.info())
	}
	return out
}

// info is the connection's ConnInfo; it runs on the loop.
func (c *conn) info() ConnInfo {
	ci := ConnInfo{ID: c.id, State: c.st.String(), Target: c.target, Up: c.up.n, Down: c.down.n, Age: c.l.now.Sub(c.acc.Start)}
	if c.acc.Client != nil {
		ci.Client = c.acc.Client.String()
	}
	if c.entry != nil {
		ci.Route = c.entry.Label
	}
	if c.hs != nil && c.target == "" && c.hs.att.Target != "" {
		ci.Target = c.hs.att.Target // still dialing it
	}
	if c.bfd >= 0 {
		ci.Backend = peerName(c.bfd)
	}
	if ci.Backend == "" && c.hs != nil && c.hs.att.Addr.IsValid() {
		ci.Backend = c.hs.att.Addr.String() // connecting to it
	}
	return ci
}

func (s state) String() string {
	switch s {
	case stProxyHeader:
		return "proxy_header"
	case stIdentify:
		return "identifying"
	case stConnecting:
		return "connecting"
	case stDialing:
		return "dialing"
	case stReplay:
		return "replaying"
	case stForward:
		return "forwarding"
	case stDone:
		return "done"
	}
	return "unknown"
}

// peerName is the address fd is connected to; "" when the kernel has none
// (a connect in progress).
func peerName(fd int) string {
	sa, err := unix.Getpeername(fd)
	if err != nil {
		return ""
	}
	if a := sockAddr(sa); a != nil {
		return a.String()
	}
	return ""
}

// sockAddr is sa as a net.Addr: TCP or Unix; nil for another family.
func sockAddr(sa unix.Sockaddr) net.Addr {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: sa.Addr[:], Port: sa.Port}
	case *unix.SockaddrInet6:
		return &net.TCPAddr{IP: sa.Addr[:], Port: sa.Port}
	case *unix.SockaddrUnix:
		return &net.UnixAddr{Name: sa.Name, Net: "unix"}
	}
	return nil
}
