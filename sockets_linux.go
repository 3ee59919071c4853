package protoplex

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"

	"github.com/darkit/protoplex/internal/listen"
	"github.com/darkit/protoplex/internal/monitor"
	"golang.org/x/sys/unix"
)

// Sockets returns a duplicate of each listening socket the manager
// serves: server.listen (TCP and Unix), server.listen_udp and the
// monitoring ports. Listeners the caller gave to Serve itself (socket
// activation) are listed when passed as served, under "activation 0",
// "activation 1", ….
func (pm *ProtocolManager) Sockets(served ...net.Listener) ([]Socket, error) {
	var out []Socket
	var errs []error
	add := func(key string, c any) {
		network := ""
		switch c.(type) {
		case *net.TCPListener:
			network = "tcp"
		case *net.UnixListener:
			network = "unix"
		case *net.UDPConn:
			network = "udp"
		default:
			errs = append(errs, fmt.Errorf("protoplex: %s: a %T cannot be handed over", key, c))
			return
		}
		fd, err := dupSocket(c.(syscall.Conn))
		if err != nil {
			errs = append(errs, fmt.Errorf("protoplex: %s: %w", key, err))
			return
		}
		out = append(out, Socket{Key: key, Network: network, FD: fd})
	}
	for i, ln := range served {
		add(listen.Key(RoleActivation, strconv.Itoa(i)), ln)
	}
	pm.listeners.Listeners(func(addr string, ln net.Listener) { add(listen.Key(listen.RoleListen, addr), ln) })
	// Every socket of a listen_udp address, in order: the new process
	// keeps the SO_REUSEPORT group as it is, so a moved UDP flow's client
	// still reaches the socket its flow is read on.
	pm.udpListeners.Listeners(func(addr string, pc net.PacketConn) {
		key := listen.Key(listen.RoleListenUDP, addr)
		for i, c := range pm.udp.Sockets(pc) {
			if i > 0 {
				add(listen.ExtraKey(key, i), c)
			} else {
				add(key, c)
			}
		}
	})
	pm.mu.Lock()
	for which, m := range pm.monitors {
		if m != nil {
			add(listen.Key(monitorRoles[which], pm.monitorAddrs[which]), m.Listener())
		}
	}
	pm.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		for _, s := range out {
			unix.Close(s.FD)
		}
		return nil, err
	}
	return out, nil
}

// dupSocket duplicates c's descriptor, close-on-exec, without touching its
// flags (os.File.Fd would make the shared socket blocking, under the
// loops that accept on it).
func dupSocket(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var dupErr error
	if err := rc.Control(func(s uintptr) { fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	if dupErr != nil {
		return -1, fmt.Errorf("dup: %w", dupErr)
	}
	return fd, nil
}

// SocketsHandedOver tells the manager that another process serves its
// sockets now: closing them here (the drain, Close) leaves a Unix
// listener's socket file in place for it, and the monitoring ports stop
// here at once — a probe or a scrape must reach the new process, not this
// one, which drains (its /health/ready says so) with counters of its own.
func (pm *ProtocolManager) SocketsHandedOver() {
	pm.listeners.Listeners(func(_ string, ln net.Listener) {
		if ul, ok := ln.(*net.UnixListener); ok {
			ul.SetUnlinkOnClose(false)
		}
	})
	pm.mu.Lock()
	monitors := pm.monitors
	pm.monitors = [2]*monitor.Server{}
	pm.mu.Unlock()
	for _, m := range monitors {
		if m != nil {
			m.Close() // its own descriptor: the new process's stays open
		}
	}
}
