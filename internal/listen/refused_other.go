//go:build !unix

package listen

// refused: without ECONNREFUSED to tell a stale socket from a failure, a
// socket file left behind is never removed.
func refused(error) bool { return false }
