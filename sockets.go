package protoplex

import (
	"os"

	"github.com/darkit/protoplex/internal/listen"
)

// Socket is one listening socket of a manager, as an upgrade hands it to
// the process that replaces this one (cmd/protoplex: SIGUSR2).
type Socket struct {
	// Key says what the socket is for and the address it was configured
	// as ("listen 127.0.0.1:443", "listen_udp :53", "metrics
	// 127.0.0.1:9091", "health 127.0.0.1:9092"): the new process takes it
	// by the same key (WithInheritedSockets).
	Key     string
	Network string // "tcp", "unix" or "udp"
	FD      int    // a duplicate, close-on-exec, that the caller closes
}

// RoleActivation is the role, in a Socket's Key, of a listener the caller
// served itself (socket activation): "activation 0", "activation 1", ….
const RoleActivation = "activation"

// WithInheritedSockets makes the manager take its listening sockets from
// files, by Socket.Key, instead of binding them: the sockets an old
// process handed over. An address with no socket there is bound as
// usual. The manager closes each file it takes (and deletes it from
// files) once it holds a duplicate; the caller closes what is left in
// files once the manager serves (InheritedLeft names them).
func WithInheritedSockets(files map[string]*os.File) Option {
	return func(o *options) {
		if len(files) > 0 {
			o.inherited = listen.NewInherited(files)
		}
	}
}

// WithHeldUDP makes the manager read none of its UDP listeners until
// ReleaseUDP, or until AdoptConnections returns or ends the old process's
// UDP flows: the new process of an upgrade, whose listen_udp sockets the
// old one reads until its flows moved here. Datagrams wait in the
// sockets' queues meanwhile.
func WithHeldUDP() Option { return func(o *options) { o.holdUDP = true } }

// ReleaseUDP reads the UDP listeners held by WithHeldUDP; safe to call
// more than once, and without it.
func (pm *ProtocolManager) ReleaseUDP() { pm.udp.Release() }

// CountUpgrade counts a binary upgrade in protoplex_upgrades_total: a
// failure by the process that keeps serving, a success by the new process
// once it took over (the old one no longer answers on the metrics port).
func (pm *ProtocolManager) CountUpgrade(ok bool) { pm.stats.Upgrade(ok) }

// InheritedLeft returns the keys of the sockets given to
// WithInheritedSockets that the manager did not take: the configuration
// no longer lists their addresses.
func (pm *ProtocolManager) InheritedLeft() []string { return pm.inherited.Left() }
