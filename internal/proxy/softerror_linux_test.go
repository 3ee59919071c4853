package proxy

import (
	"encoding/binary"
	"errors"
	"net"
	"syscall"
	"testing"
	"unsafe"
)

// TestSoftErrorWhileUploadBlocked: an ICMP host unreachable for a segment
// the proxy sent the client leaves an error pending on the proxy's client
// socket while the connection stays established: the kernel keeps trying
// and reports that error only if the connection later times out. Looks at
// the client while the upload is blocked must not take it for a reset: the
// pair lives on and delivers every byte. The test sends the ICMP itself, so
// it needs raw sockets (CAP_NET_RAW).
func TestSoftErrorWhileUploadBlocked(t *testing.T) {
	capture := synAckCapture(t)
	icmp := rawSocket(t, syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_ICMP)

	client, pc := tcpPair(t) // room at the proxy for the client's last bytes and FIN
	defer client.Close()
	clientPort := uint16(client.LocalAddr().(*net.TCPAddr).Port)
	proxyPort := uint16(pc.LocalAddr().(*net.TCPAddr).Port)
	isn := synAckSeq(t, capture, proxyPort, clientPort)

	u := blockUpload(t, client, pc)
	// Once the client has nothing unacknowledged, it sends the proxy
	// nothing more: no segment comes in to clear the error (an incoming
	// acknowledgement does) before the looks below.
	waitFor(t, "all the client's bytes acknowledged", func() bool { return unsent(t, client) == 0 })

	// The proxy sent the client nothing but acknowledgements: isn+1 is its
	// oldest unacknowledged sequence number and its next one, the only
	// number the kernel takes an ICMP error for.
	sendHostUnreachable(t, icmp, proxyPort, clientPort, isn+1)
	looks := u.p.sourceChecks.Load()
	var ended *Stats
	waitFor(t, "looked at the client", func() bool {
		select {
		case st := <-u.fwd:
			ended = &st
			return true
		default:
		}
		return u.p.sourceChecks.Load() >= looks+3
	})
	if ended != nil {
		t.Fatalf("pair ended on a soft error: %+v", *ended)
	}
	var pending int
	var err error
	withFd(t, pc, func(fd int) { pending, err = syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ERROR) })
	if err != nil || syscall.Errno(pending) != syscall.EHOSTUNREACH {
		t.Fatalf("error pending on the proxy's client socket: %v (%v), want the ICMP's %v", syscall.Errno(pending), err, syscall.EHOSTUNREACH)
	}

	client.(*net.TCPConn).CloseWrite()
	u.deliverRest(t, client)
}

// rawSocket opens a socket closed when the test ends; the test is skipped
// when the process may not open it.
func rawSocket(t *testing.T, domain, typ, proto int) int {
	t.Helper()
	fd, err := syscall.Socket(domain, typ|syscall.SOCK_CLOEXEC, proto)
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		t.Skipf("raw sockets: %v (needs CAP_NET_RAW)", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	// Reads end within 10 s: a packet that never comes fails the test.
	tv := syscall.Timeval{Sec: 10}
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return fd
}

// synAckCapture returns a packet socket that receives the TCP SYN-ACKs on
// the loopback interface (IPv4, from the IP header on) and nothing else, so
// other traffic cannot crowd them out of its queue.
func synAckCapture(t *testing.T) int {
	t.Helper()
	fd := rawSocket(t, syscall.AF_PACKET, syscall.SOCK_DGRAM, 0) // protocol 0: nothing before the filter
	const synAck = 0x12
	filter := []syscall.SockFilter{
		*syscall.LsfStmt(syscall.BPF_LD|syscall.BPF_B|syscall.BPF_ABS, 9), // IP protocol
		*syscall.LsfJump(syscall.BPF_JMP|syscall.BPF_JEQ|syscall.BPF_K, syscall.IPPROTO_TCP, 0, 5),
		*syscall.LsfStmt(syscall.BPF_LDX|syscall.BPF_B|syscall.BPF_MSH, 0), // IP header length
		*syscall.LsfStmt(syscall.BPF_LD|syscall.BPF_B|syscall.BPF_IND, 13), // TCP flags
		*syscall.LsfStmt(syscall.BPF_ALU|syscall.BPF_AND|syscall.BPF_K, synAck),
		*syscall.LsfJump(syscall.BPF_JMP|syscall.BPF_JEQ|syscall.BPF_K, synAck, 0, 1),
		*syscall.LsfStmt(syscall.BPF_RET|syscall.BPF_K, 1<<16),
		*syscall.LsfStmt(syscall.BPF_RET|syscall.BPF_K, 0),
	}
	if err := syscall.AttachLsf(fd, filter); err != nil {
		t.Fatal(err)
	}
	var lo *net.Interface
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback != 0 {
			lo = &i
		}
	}
	if lo == nil {
		t.Fatal("no loopback interface")
	}
	if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: htons(syscall.ETH_P_IP), Ifindex: lo.Index}); err != nil {
		t.Fatal(err)
	}
	return fd
}

// synAckSeq reads SYN-ACKs from capture until the one from port from to
// port to, and returns its sequence number: the ISN of the accepting side.
func synAckSeq(t *testing.T, capture int, from, to uint16) uint32 {
	t.Helper()
	buf := make([]byte, 1<<16)
	for {
		n, _, err := syscall.Recvfrom(capture, buf, 0)
		if err != nil {
			t.Fatalf("no SYN-ACK captured: %v", err)
		}
		ip := buf[:n]
		if len(ip) < 20 || ip[9] != syscall.IPPROTO_TCP {
			continue
		}
		tcp := ip[int(ip[0]&0x0f)*4:]
		if len(tcp) >= 8 && binary.BigEndian.Uint16(tcp) == from && binary.BigEndian.Uint16(tcp[2:]) == to {
			return binary.BigEndian.Uint32(tcp[4:])
		}
	}
}

// sendHostUnreachable sends, from and to 127.0.0.1, an ICMP host
// unreachable for a TCP segment from port from to port to with sequence
// number seq, and returns once icmp has seen it arrive.
func sendHostUnreachable(t *testing.T, icmp int, from, to uint16, seq uint32) {
	t.Helper()
	const destUnreachable, hostUnreachable = 3, 1
	loopback := []byte{127, 0, 0, 1}
	inner := []byte{0x45, 0, 0, 40, 0, 0, 0, 0, 64, syscall.IPPROTO_TCP, 0, 0}
	inner = append(append(inner, loopback...), loopback...)
	binary.BigEndian.PutUint16(inner[10:], checksum(inner))
	inner = binary.BigEndian.AppendUint16(inner, from)
	inner = binary.BigEndian.AppendUint16(inner, to)
	inner = binary.BigEndian.AppendUint32(inner, seq)
	msg := append([]byte{destUnreachable, hostUnreachable, 0, 0, 0, 0, 0, 0}, inner...)
	binary.BigEndian.PutUint16(msg[2:], checksum(msg))
	if err := syscall.Sendto(icmp, msg, 0, &syscall.SockaddrInet4{Addr: [4]byte(loopback)}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := syscall.Recvfrom(icmp, buf, 0)
		if err != nil {
			t.Fatalf("the ICMP never arrived: %v", err)
		}
		got := buf[:n]
		if len(got) < 20 {
			continue
		}
		got = got[int(got[0]&0x0f)*4:] // the IP header raw sockets receive
		if len(got) == len(msg) && string(got[:2]) == string(msg[:2]) && string(got[8:]) == string(inner) {
			return
		}
	}
}

// checksum is the Internet checksum (RFC 1071) of b.
func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// unsent is how many bytes c has not had acknowledged yet (sent or not).
func unsent(t testing.TB, c net.Conn) int {
	var n int32
	withFd(t, c, func(fd int) {
		_, _, _ = syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&n)))
	})
	return int(n)
}

// htons is v in network byte order, as socket calls take a protocol number.
func htons(v uint16) uint16 {
	return binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, v))
}
