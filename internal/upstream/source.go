package upstream

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// MaxSourceAddrs bounds the source addresses of one protocol's backend
// dials (ParseSource).
const MaxSourceAddrs = 1024

// ParseSource reads the local addresses backend connections are dialed
// from: each entry an IP address or an inclusive range "127.0.0.2-127.0.0.20".
// All must be of one address family, unicast and listed once; at most
// MaxSourceAddrs in all. None means the kernel chooses (nil, nil).
//
// Each source address has the whole ephemeral port range towards a given
// backend address, so n sources multiply by n the connections that can sit
// in TIME_WAIT towards it before connect() runs out of ports.
func ParseSource(specs []string) ([]netip.Addr, error) {
	var out []netip.Addr
	seen := map[netip.Addr]bool{}
	add := func(a netip.Addr, spec string) error {
		if len(out) == MaxSourceAddrs {
			return fmt.Errorf("source %q: more than %d addresses", spec, MaxSourceAddrs)
		}
		if seen[a] {
			return fmt.Errorf("source %q: %s listed twice", spec, a)
		}
		seen[a] = true
		out = append(out, a)
		return nil
	}
	for _, spec := range specs {
		spec = strings.TrimSpace(spec)
		lo, hi, isRange := strings.Cut(spec, "-")
		first, err := parseSourceAddr(spec, lo)
		if err != nil {
			return nil, err
		}
		last := first
		if isRange {
			if last, err = parseSourceAddr(spec, hi); err != nil {
				return nil, err
			}
			if first.Is4() != last.Is4() || last.Less(first) {
				return nil, fmt.Errorf("source %q: want first-last, same family, first <= last", spec)
			}
		}
		if len(out) > 0 && out[0].Is4() != first.Is4() {
			return nil, fmt.Errorf("source %q: all source addresses must be of one family", spec)
		}
		for a := first; ; a = a.Next() {
			if err := add(a, spec); err != nil {
				return nil, err
			}
			if a == last {
				break
			}
		}
	}
	return out, nil
}

func parseSourceAddr(spec, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("source %q: want an IP address or first-last range", spec)
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("source %q: zoned addresses are not supported", spec)
	}
	a = a.Unmap()
	if a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return netip.Addr{}, fmt.Errorf("source %q: %s cannot be a source address", spec, a)
	}
	return a, nil
}

// checkSource holds Options.Source to what ParseSource returns, for sets
// built without it.
func checkSource(src []netip.Addr) error {
	if len(src) > MaxSourceAddrs {
		return fmt.Errorf("%d source addresses: at most %d", len(src), MaxSourceAddrs)
	}
	for _, a := range src {
		if !a.IsValid() || a.Zone() != "" || a.Is4In6() || a.Is4() != src[0].Is4() {
			return errors.New("source addresses: want unzoned addresses of one family")
		}
	}
	return nil
}
