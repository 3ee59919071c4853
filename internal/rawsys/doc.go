// Package rawsys is the non-blocking socket system calls of the event
// loops (internal/evloop) and of the UDP engine's loop driver
// (internal/udp), in one place: each is one RawSyscall, allocates nothing,
// and returns its error as a syscall.Errno; addresses are netip.AddrPort,
// converted to and from raw sockaddrs in place (sockaddr_linux.go).
//
// RawSyscall, not Syscall: a call that cannot block has no P to hand over,
// and the runtime's entersyscall/exitsyscall around it would cost more
// than many of the calls themselves. So nothing here may block: every
// socket is non-blocking, or the call says MSG_DONTWAIT. A loop sleeps in
// the runtime's poller, never in a call of this package.
//
// Bounds: none of its own; every buffer, batch and address is the
// caller's. Linux only: elsewhere the package is empty, as its callers'
// loop code is (evloop.Supported is false).
package rawsys
