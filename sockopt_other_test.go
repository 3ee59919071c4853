//go:build !unix

package protoplex

import "errors"

// The socket options these tests read and set are Unix calls; elsewhere the
// buffer keeps its default and the keepalive check is skipped.
func setRcvBuf(uintptr, int) {}

func keepAliveOf(uintptr) (int, error) { return 0, errors.ErrUnsupported }
