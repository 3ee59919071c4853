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

// activationListeners returns the listening sockets a service manager
// passed under the socket activation protocol (sd_listen_fds(3)): when
// LISTEN_PID is this process and LISTEN_FDS is n, file descriptors 3 to
// 3+n-1. It unsets LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES in any case, so
// that a process this one starts does not take them for its own. Without
// the variables, or with LISTEN_PID naming another process, it returns none.
func activationListeners() ([]net.Listener, error) {
	pid, fds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(k)
	}
	if fds == "" || pid != strconv.Itoa(os.Getpid()) {
		return nil, nil
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 1 || n > maxListenFDs {
		return nil, fmt.Errorf("protoplex: socket activation: LISTEN_FDS=%q: want a count from 1 to %d", fds, maxListenFDs)
	}
	lns := make([]net.Listener, 0, n)
	for fd := listenFDsStart; fd < listenFDsStart+n; fd++ {
		f := os.NewFile(uintptr(fd), "LISTEN_FD_"+strconv.Itoa(fd))
		ln, err := net.FileListener(f) // a duplicate, close-on-exec
		f.Close()
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("protoplex: socket activation: fd %d: %w (a stream socket that listens is needed)", fd, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}
