// Package proxyproto reads and writes PROXY protocol headers (HAProxy's
// PROXY protocol, versions 1 and 2): the header a load balancer puts in
// front of a TCP stream to tell the server who the client is.
//
// Parse is a pure function of the bytes received so far, safe on any input
// and bounded: a v1 line is at most MaxV1Len bytes, a v2 header announces its
// length in its first 16. Read takes a header off a connection; AppendV1 and
// AppendV2 write one.
package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"strconv"
)

// Header is what a PROXY header says about the connection it precedes.
type Header struct {
	// Source is the client, Dest the address it connected to. Parse
	// returns IPv4-mapped IPv6 addresses as IPv4 and never a zone.
	Source, Dest netip.AddrPort
	// Local is set when the header names no client: a v2 LOCAL command or
	// a v1 UNKNOWN line (the front's own connection, say a health check),
	// or a v2 address family without IP addresses (UNSPEC, UNIX). Source and
	// Dest are then invalid and the connection's own addresses apply.
	Local bool
}

// Errors of Parse and Read.
var (
	// ErrIncomplete: the bytes are a valid beginning of a header; more are
	// needed to decide.
	ErrIncomplete = errors.New("proxyproto: incomplete header")
	// ErrNotProxy: the bytes do not begin with a PROXY signature.
	ErrNotProxy = errors.New("proxyproto: not a PROXY header")
	// ErrInvalid: the signature is there but the header is malformed (or,
	// from Read, longer than the buffer).
	ErrInvalid = errors.New("proxyproto: malformed header")
)

// MaxV1Len is the longest v1 header line, CRLF included (the spec's
// "PROXY UNKNOWN ffff:...:ffff ffff:...:ffff 65535 65535\r\n").
const MaxV1Len = 107

const (
	v1Sig = "PROXY "
	v2Sig = "\r\n\r\n\x00\r\nQUIT\n"
)

// Parse reads the PROXY header b begins with. It returns the header and its
// length n; the bytes after b[:n] belong to the client's stream. The error
// is ErrIncomplete, ErrNotProxy or ErrInvalid (n is then 0). Parse gives the
// same answer however b grew: a prefix of b answers ErrIncomplete or what b
// answers. It never reads past len(b) nor retains b.
func Parse(b []byte) (h Header, n int, err error) {
	if len(b) > 0 && b[0] == '\r' {
		return parseV2(b)
	}
	return parseV1(b)
}

// hasSigPrefix reports whether b starts with sig, or, shorter, is a prefix
// of it (ErrIncomplete).
func hasSigPrefix(b []byte, sig string) error {
	k := min(len(b), len(sig))
	if string(b[:k]) != sig[:k] {
		return ErrNotProxy
	}
	if k < len(sig) {
		return ErrIncomplete
	}
	return nil
}

func parseV1(b []byte) (Header, int, error) {
	if err := hasSigPrefix(b, v1Sig); err != nil {
		return Header{}, 0, err
	}
	end := bytes.Index(b[:min(len(b), MaxV1Len)], []byte("\r\n"))
	if end < 0 {
		if len(b) >= MaxV1Len {
			return Header{}, 0, ErrInvalid
		}
		return Header{}, 0, ErrIncomplete
	}
	f := bytes.Fields(b[len(v1Sig):end])
	if len(f) >= 1 && string(f[0]) == "UNKNOWN" { // the rest of the line is ignored (spec)
		return Header{Local: true}, end + 2, nil
	}
	if len(f) != 5 || (string(f[0]) != "TCP4" && string(f[0]) != "TCP6") {
		return Header{}, 0, ErrInvalid
	}
	sa, err1 := netip.ParseAddr(string(f[1]))
	da, err2 := netip.ParseAddr(string(f[2]))
	sp, err3 := strconv.ParseUint(string(f[3]), 10, 16)
	dp, err4 := strconv.ParseUint(string(f[4]), 10, 16)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
		return Header{}, 0, ErrInvalid
	}
	is4 := string(f[0]) == "TCP4"
	if sa.Is4() != is4 || da.Is4() != is4 || sa.Zone() != "" || da.Zone() != "" {
		return Header{}, 0, ErrInvalid
	}
	return Header{Source: netip.AddrPortFrom(sa.Unmap(), uint16(sp)), Dest: netip.AddrPortFrom(da.Unmap(), uint16(dp))}, end + 2, nil
}

// v2 address block sizes per family (the high nibble of byte 13).
const (
	famUnspec = 0
	famInet   = 1
	famInet6  = 2
	famUnix   = 3
)

var v2AddrLen = [...]int{famUnspec: 0, famInet: 12, famInet6: 36, famUnix: 216}

func parseV2(b []byte) (Header, int, error) {
	if err := hasSigPrefix(b, v2Sig); err != nil {
		return Header{}, 0, err
	}
	// Each fixed byte is judged as soon as it is there.
	if len(b) > 12 {
		if verCmd := b[12]; verCmd>>4 != 2 || verCmd&0xF > 1 { // version 2; LOCAL or PROXY
			return Header{}, 0, ErrInvalid
		}
	}
	if len(b) > 13 {
		if fam := b[13]; fam>>4 > famUnix || fam&0xF > 2 { // UNSPEC, STREAM or DGRAM
			return Header{}, 0, ErrInvalid
		}
	}
	if len(b) < 16 {
		return Header{}, 0, ErrIncomplete
	}
	local, fam := b[12]&0xF == 0, int(b[13]>>4)
	n := 16 + int(binary.BigEndian.Uint16(b[14:16]))
	if !local && n-16 < v2AddrLen[fam] {
		return Header{}, 0, ErrInvalid // the addresses do not fit in the announced length
	}
	if len(b) < n {
		return Header{}, 0, ErrIncomplete
	}
	body := b[16:n] // addresses, then TLVs, which are skipped
	if local {
		return Header{Local: true}, n, nil
	}
	switch fam {
	case famInet:
		sa := netip.AddrFrom4([4]byte(body[0:4]))
		da := netip.AddrFrom4([4]byte(body[4:8]))
		return Header{
			Source: netip.AddrPortFrom(sa, binary.BigEndian.Uint16(body[8:10])),
			Dest:   netip.AddrPortFrom(da, binary.BigEndian.Uint16(body[10:12])),
		}, n, nil
	case famInet6:
		sa := netip.AddrFrom16([16]byte(body[0:16])).Unmap()
		da := netip.AddrFrom16([16]byte(body[16:32])).Unmap()
		return Header{
			Source: netip.AddrPortFrom(sa, binary.BigEndian.Uint16(body[32:34])),
			Dest:   netip.AddrPortFrom(da, binary.BigEndian.Uint16(body[34:36])),
		}, n, nil
	}
	return Header{Local: true}, n, nil // UNSPEC, UNIX: no IP client to tell
}

// announcedLen is the whole length of the v2 header b begins with, as its
// fixed part announces, or 0 while that is not known (fewer than 16 bytes,
// or v1, whose line is at most MaxV1Len).
func announcedLen(b []byte) int {
	if len(b) < 16 || string(b[:12]) != v2Sig {
		return 0
	}
	return 16 + int(binary.BigEndian.Uint16(b[14:16]))
}

// addrs returns h's addresses as they are written, and whether there is a
// client to write (both valid, h not Local). Two IPv4 addresses (mapped or
// not) are written as IPv4; otherwise both as IPv6, an IPv4 one mapped.
func (h Header) addrs() (src, dst netip.AddrPort, ok bool) {
	if h.Local || !h.Source.IsValid() || !h.Dest.IsValid() {
		return src, dst, false
	}
	s, d := h.Source.Addr().Unmap().WithZone(""), h.Dest.Addr().Unmap().WithZone("")
	if !s.Is4() || !d.Is4() {
		s, d = netip.AddrFrom16(s.As16()), netip.AddrFrom16(d.As16())
	}
	return netip.AddrPortFrom(s, h.Source.Port()), netip.AddrPortFrom(d, h.Dest.Port()), true
}

// AppendV1 appends h as a v1 text line to b: TCP4 when both addresses are
// IPv4 (IPv4-mapped included), else TCP6, zones dropped. A Local header, or
// one missing an address, is written as "PROXY UNKNOWN\r\n".
func AppendV1(b []byte, h Header) []byte {
	src, dst, ok := h.addrs()
	if !ok {
		return append(b, "PROXY UNKNOWN\r\n"...)
	}
	fam := "TCP4 "
	if src.Addr().Is6() {
		fam = "TCP6 "
	}
	b = append(b, v1Sig+fam...)
	b = src.Addr().AppendTo(b)
	b = append(b, ' ')
	b = dst.Addr().AppendTo(b)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(src.Port()), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(dst.Port()), 10)
	return append(b, "\r\n"...)
}

// AppendV2 appends h as a v2 binary header to b: a PROXY command over TCP,
// IPv4 or IPv6 as AppendV1 chooses, no TLVs. A header AppendV1 writes as
// UNKNOWN is written as a LOCAL command with the UNSPEC family.
func AppendV2(b []byte, h Header) []byte {
	b = append(b, v2Sig...)
	src, dst, ok := h.addrs()
	if !ok {
		return append(b, 0x20, famUnspec<<4, 0, 0)
	}
	if src.Addr().Is4() {
		b = append(b, 0x21, famInet<<4|1, 0, byte(v2AddrLen[famInet]))
		s, d := src.Addr().As4(), dst.Addr().As4()
		b = append(append(b, s[:]...), d[:]...)
	} else {
		b = append(b, 0x21, famInet6<<4|1, 0, byte(v2AddrLen[famInet6]))
		s, d := src.Addr().As16(), dst.Addr().As16()
		b = append(append(b, s[:]...), d[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

// Claims reports whether b is, or begins, a PROXY header (a valid one or
// not): what an untrusted sender must not send.
func Claims(b []byte) bool {
	_, _, err := Parse(b)
	return !errors.Is(err, ErrNotProxy)
}
