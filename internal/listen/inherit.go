package listen

import (
	"net"
	"os"
	"slices"
	"sync"
)

// Roles name what a listening socket is for, in the key it is handed over
// under (Key): the new process takes each by the same configured address.
const (
	RoleListen    = "listen"     // server.listen (TCP or unix:/path)
	RoleListenUDP = "listen_udp" // server.listen_udp
	RoleMetrics   = "metrics"    // the metrics port
	RoleHealth    = "health"     // the health port
)

// Key is the name a socket of role, bound for the configured address addr,
// is handed over under.
func Key(role, addr string) string { return role + " " + addr }

// Inherited is sockets a process was given instead of binding them (an
// upgrade's: the old process's), each taken once by its Key. Its methods
// are safe for concurrent use; a nil *Inherited has none.
type Inherited struct {
	mu    sync.Mutex
	files map[string]*os.File
}

// NewInherited keeps files by key. A file taken is closed once what was
// made of it holds its own duplicate; the caller closes the rest (those
// still in files, which taking deletes from) once the process is ready.
func NewInherited(files map[string]*os.File) *Inherited {
	return &Inherited{files: files}
}

// take removes and returns the file handed over under key, or nil.
func (in *Inherited) take(key string) *os.File {
	if in == nil {
		return nil
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	f := in.files[key]
	delete(in.files, key)
	return f
}

// Listener returns the stream listener handed over for role and addr, a
// duplicate of the file; ok false when there is none (bind it).
func (in *Inherited) Listener(role, addr string) (ln net.Listener, ok bool, err error) {
	f := in.take(Key(role, addr))
	if f == nil {
		return nil, false, nil
	}
	defer f.Close() // ln holds its own duplicate
	ln, err = net.FileListener(f)
	return ln, true, err
}

// PacketConn returns the UDP socket handed over for role and addr, as
// Listener does.
func (in *Inherited) PacketConn(role, addr string) (pc net.PacketConn, ok bool, err error) {
	f := in.take(Key(role, addr))
	if f == nil {
		return nil, false, nil
	}
	defer f.Close() // pc holds its own duplicate
	pc, err = net.FilePacketConn(f)
	return pc, true, err
}

// Left returns the keys nobody took (the new configuration no longer
// lists them), sorted.
func (in *Inherited) Left() []string {
	if in == nil {
		return nil
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	var keys []string
	for k := range in.files {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
