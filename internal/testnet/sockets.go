package testnet

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// Socket is one TCP socket as Linux lists it in /proc/net/tcp and
// /proc/net/tcp6.
type Socket struct {
	Local, Remote netip.AddrPort
	State         SocketState
}

// SocketState is a TCP state as /proc/net/tcp writes it
// (include/net/tcp_states.h).
type SocketState uint8

// The states tests look for.
const (
	StateEstablished SocketState = 0x01
	StateTimeWait    SocketState = 0x06 // the side that closed first waits out late segments
	StateListen      SocketState = 0x0A
)

// EachTCPSocket calls fn for every TCP socket of the network namespace, IPv4
// then IPv6. It reads the kernel's tables line by line, so a table of a
// million TIME_WAIT sockets costs no memory beyond a line. It fails where
// /proc/net/tcp cannot be read (other systems than Linux); a missing
// /proc/net/tcp6 (IPv6 disabled) is no error.
func EachTCPSocket(fn func(Socket)) error {
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		err := eachSocketIn(name, fn)
		if errors.Is(err, fs.ErrNotExist) && name == "/proc/net/tcp6" {
			continue
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func eachSocketIn(name string, fn func(Socket)) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "  sl  local_address rem_address   st ...": a header line, then
		// "   0: 0100007F:0277 00000000:0000 0A ...".
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[0] == "sl" {
			continue
		}
		local, lerr := parseProcAddr(fields[1])
		remote, rerr := parseProcAddr(fields[2])
		st, serr := strconv.ParseUint(fields[3], 16, 8)
		if err := errors.Join(lerr, rerr, serr); err != nil {
			return errors.Join(errors.New(name+": "+sc.Text()), err)
		}
		fn(Socket{Local: local, Remote: remote, State: SocketState(st)})
	}
	return sc.Err()
}

// parseProcAddr parses "0100007F:EE3E": the address as the kernel's 32-bit
// words in host byte order, in hex, and the port in hex.
func parseProcAddr(s string) (netip.AddrPort, error) {
	h, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, errors.New("no port in " + s)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, err
	}
	raw, err := hex.DecodeString(h)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, errors.New("bad address " + h)
	}
	// Each word was printed as a number: its bytes in memory (network
	// order) are the number stored in the host's order.
	for i := 0; i < len(raw); i += 4 {
		binary.NativeEndian.PutUint32(raw[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr, uint16(port)), nil
}
