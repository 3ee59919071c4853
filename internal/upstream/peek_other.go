//go:build !unix

package upstream

import (
	"errors"
	"syscall"
)

var errNoPeek = errors.New("no peek")

// recvPeek: without a non-blocking peek a pooled connection is taken as
// alive; a dead one fails at its first write like any dial.
func recvPeek(int, []byte) (int, syscall.Sockaddr, error) { return -1, nil, errNoPeek }

func isEAGAIN(err error) bool { return err == errNoPeek }
