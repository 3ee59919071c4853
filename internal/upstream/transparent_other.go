//go:build !linux

package upstream

import "syscall"

// There is no IP_TRANSPARENT here: checkTransparent refuses the option.
const transparentSupported = false

func transparentControl(_, _ string, _ syscall.RawConn) error { return ErrTransparentUnsupported }
