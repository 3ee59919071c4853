package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
)

// listenFDsStart is the first file descriptor systemd passes (SD_LISTEN_FDS_START).
const listenFDsStart = 3

// maxListenFDs bounds LISTEN_FDS, as server.listen is bounded: a unit with
// more sockets than that is a mistake, and a wild count must not size an
// allocation.
const maxListenFDs = 64

// activation is what a service manager passed: stream sockets that listen
// (ListenStream=, served instead of server.listen) and UDP sockets
// (ListenDatagram=, each serving the server.listen_udp entry with its
// address).
type activation struct {
	streams   []net.Listener
	datagrams []net.PacketConn
}

// passed reports whether sockets were passed.
func (a *activation) passed() bool { return len(a.streams)+len(a.datagrams) > 0 }

// close closes the sockets not handed over yet.
func (a *activation) close() {
	for _, ln := range a.streams {
		ln.Close()
	}
	for _, pc := range a.datagrams {
		pc.Close()
	}
	*a = activation{}
}

// activationListeners returns the sockets a service manager passed under
// the socket activation protocol (sd_listen_fds(3)): when LISTEN_PID is this
// process and LISTEN_FDS is n, file descriptors 3 to 3+n-1, each a stream
// socket that listens or a UDP socket. It unsets LISTEN_PID, LISTEN_FDS and
// LISTEN_FDNAMES in any case, so that a process this one starts does not
// take them for its own. Without the variables, or with LISTEN_PID naming
// another process, it returns none.
func activationListeners() (activation, error) {
	pid, fds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(k)
	}
	var a activation
	if fds == "" || pid != strconv.Itoa(os.Getpid()) {
		return a, nil
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 1 || n > maxListenFDs {
		return a, fmt.Errorf("protoplex: socket activation: LISTEN_FDS=%q: want a count from 1 to %d", fds, maxListenFDs)
	}
	for fd := listenFDsStart; fd < listenFDsStart+n; fd++ {
		f := os.NewFile(uintptr(fd), "LISTEN_FD_"+strconv.Itoa(fd))
		// Each is a duplicate, close-on-exec.
		var err error
		if streamListening(f) {
			var ln net.Listener
			if ln, err = net.FileListener(f); err == nil {
				a.streams = append(a.streams, ln)
			}
		} else {
			var pc net.PacketConn
			if pc, err = net.FilePacketConn(f); err == nil && !isUDP(pc) {
				pc.Close()
				err = fmt.Errorf("a %s socket", pc.LocalAddr().Network())
			}
			if err == nil {
				a.datagrams = append(a.datagrams, pc)
			}
		}
		f.Close()
		if err != nil {
			a.close()
			return a, fmt.Errorf("protoplex: socket activation: fd %d: %w (a stream socket that listens or a UDP socket is needed)", fd, err)
		}
	}
	return a, nil
}

func isUDP(pc net.PacketConn) bool {
	_, ok := pc.(*net.UDPConn)
	return ok
}
