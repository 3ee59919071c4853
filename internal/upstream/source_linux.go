package upstream

import "syscall"

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (linux/in.h, all
// architectures); syscall defines it for a few only.
const ipBindAddressNoPort = 0x18

// bindAddressNoPort lets bind(source, 0) leave the port to connect(), which
// picks one unique per 4-tuple: each source address then has the whole
// ephemeral range towards every backend, not one range shared by all
// backends. Best effort: without it the bind still works.
func bindAddressNoPort(_, _ string, c syscall.RawConn) error {
	c.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
	return nil
}
