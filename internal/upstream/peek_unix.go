//go:build unix

package upstream

import "syscall"

func recvPeek(fd int, b []byte) (int, syscall.Sockaddr, error) {
	n, from, err := syscall.Recvfrom(fd, b, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	if err != nil {
		return -1, from, err
	}
	return n, from, nil
}

func isEAGAIN(err error) bool { return err == syscall.EAGAIN }
