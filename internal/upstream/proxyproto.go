package upstream

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strconv"

	"github.com/darkit/protoplex/protocols"
)

// ParseProxyHeader reads a PROXY protocol v1 or v2 header at the start of
// data, as sent by a trusted front load balancer. It is a pure function of
// the bytes (NeedMore / Match / NoMatch, like a detector). On Match, n is the
// header length and src the client address; src is invalid for LOCAL (v2)
// and UNKNOWN (v1) headers, which carry no client (health checks).
func ParseProxyHeader(data []byte) (src, dst netip.AddrPort, n int, res protocols.Result) {
	if len(data) > 0 && data[0] == '\r' {
		return parseV2(data)
	}
	return parseV1(data)
}

// MaxProxyV1Len is the longest v1 header line, CRLF included (the spec's
// "PROXY UNKNOWN ffff:...:ffff ffff:...:ffff 65535 65535\r\n").
const MaxProxyV1Len = 107

// ProxyHeaderLen returns the whole length of the v2 header data begins
// with, as its fixed part announces, or 0 while that is not known (fewer
// than 16 bytes, or v1, whose line is at most MaxProxyV1Len). A reader
// whose buffer is shorter can refuse the header at once.
func ProxyHeaderLen(data []byte) int {
	if len(data) < 16 || !bytes.Equal(data[:12], proxyV2Sig) {
		return 0
	}
	return 16 + int(binary.BigEndian.Uint16(data[14:16]))
}

func parseV1(data []byte) (src, dst netip.AddrPort, n int, res protocols.Result) {
	const sig = "PROXY "
	if len(data) < len(sig) {
		if bytes.HasPrefix([]byte(sig), data) {
			return src, dst, 0, protocols.NeedMore
		}
		return src, dst, 0, protocols.NoMatch
	}
	if string(data[:len(sig)]) != sig {
		return src, dst, 0, protocols.NoMatch
	}
	end := bytes.Index(data[:min(len(data), MaxProxyV1Len)], []byte("\r\n"))
	if end < 0 {
		if len(data) >= MaxProxyV1Len {
			return src, dst, 0, protocols.NoMatch
		}
		return src, dst, 0, protocols.NeedMore
	}
	f := bytes.Fields(data[len(sig):end])
	if len(f) >= 1 && string(f[0]) == "UNKNOWN" {
		return src, dst, end + 2, protocols.Match
	}
	if len(f) != 5 || (string(f[0]) != "TCP4" && string(f[0]) != "TCP6") {
		return src, dst, 0, protocols.NoMatch
	}
	sa, err1 := netip.ParseAddr(string(f[1]))
	da, err2 := netip.ParseAddr(string(f[2]))
	sp, err3 := strconv.ParseUint(string(f[3]), 10, 16)
	dp, err4 := strconv.ParseUint(string(f[4]), 10, 16)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || sa.Is4() != (string(f[0]) == "TCP4") {
		return src, dst, 0, protocols.NoMatch
	}
	return netip.AddrPortFrom(sa, uint16(sp)), netip.AddrPortFrom(da, uint16(dp)), end + 2, protocols.Match
}

func parseV2(data []byte) (src, dst netip.AddrPort, n int, res protocols.Result) {
	if len(data) < len(proxyV2Sig) {
		if bytes.HasPrefix(proxyV2Sig, data) {
			return src, dst, 0, protocols.NeedMore
		}
		return src, dst, 0, protocols.NoMatch
	}
	if !bytes.Equal(data[:12], proxyV2Sig) {
		return src, dst, 0, protocols.NoMatch
	}
	if len(data) < 16 {
		return src, dst, 0, protocols.NeedMore
	}
	verCmd, fam := data[12], data[13]
	length := int(binary.BigEndian.Uint16(data[14:16]))
	if verCmd>>4 != 2 || verCmd&0xF > 1 {
		return src, dst, 0, protocols.NoMatch
	}
	if len(data) < 16+length {
		return src, dst, 0, protocols.NeedMore
	}
	n = 16 + length
	body := data[16:n]
	if verCmd&0xF == 0 { // LOCAL: the front's own connection
		return src, dst, n, protocols.Match
	}
	switch fam >> 4 {
	case 1: // AF_INET
		if len(body) < 12 {
			return src, dst, 0, protocols.NoMatch
		}
		sa := netip.AddrFrom4([4]byte(body[0:4]))
		da := netip.AddrFrom4([4]byte(body[4:8]))
		return netip.AddrPortFrom(sa, binary.BigEndian.Uint16(body[8:10])), netip.AddrPortFrom(da, binary.BigEndian.Uint16(body[10:12])), n, protocols.Match
	case 2: // AF_INET6
		if len(body) < 36 {
			return src, dst, 0, protocols.NoMatch
		}
		sa := netip.AddrFrom16([16]byte(body[0:16]))
		da := netip.AddrFrom16([16]byte(body[16:32]))
		return netip.AddrPortFrom(sa.Unmap(), binary.BigEndian.Uint16(body[32:34])), netip.AddrPortFrom(da.Unmap(), binary.BigEndian.Uint16(body[34:36])), n, protocols.Match
	}
	return src, dst, n, protocols.Match // UNSPEC/UNIX: no usable client address; TLVs skipped
}
