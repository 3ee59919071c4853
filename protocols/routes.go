package protocols

import "strings"

// Conditions are a route's conditions on a first flight's metadata: every
// non-empty list must hold. Entries are exact names or "*.example.com"
// (any name below example.com).
type Conditions struct {
	SNI   []string // TLS server_name
	ALPN  []string // TLS application protocols
	Hosts []string // HTTP Host header
}

// Keys reports which conditions are set.
func (c Conditions) Keys() Keys {
	var k Keys
	if len(c.SNI) > 0 {
		k |= SNIKey
	}
	if len(c.ALPN) > 0 {
		k |= ALPNKey
	}
	if len(c.Hosts) > 0 {
		k |= HostKey
	}
	return k
}

// Accepts reports whether md satisfies every condition:
//
//   - SNI: md.SNI equals one entry, or is below a "*.example.com" entry
//     (a.example.com, a.b.example.com; not example.com itself);
//   - ALPN: at least one of the client's ALPN values is listed
//     (ALPN identifiers are opaque byte strings, compared exactly, RFC 7301);
//   - Hosts: md.Host matches like SNI.
//
// Names compare case-insensitively and ignore a trailing dot. Empty
// Conditions accept everything.
//
// Accepts checks one route's lists one entry at a time. The identification
// engine does not call it per route: internal/identify's Index answers the
// same question for all routes of a protocol at once, from names
// normalised when the table is built, and its tests hold it to Accepts.
func (c Conditions) Accepts(md Metadata) bool {
	if len(c.SNI) > 0 && !routeMatchAnyName(c.SNI, md.SNI) {
		return false
	}
	if len(c.ALPN) > 0 && !routeMatchALPN(c.ALPN, md.ALPN) {
		return false
	}
	if len(c.Hosts) > 0 && !routeMatchAnyName(c.Hosts, md.Host) {
		return false
	}
	return true
}

// Keys is a set of route condition kinds.
type Keys uint8

// The route condition kinds, named after their YAML keys.
const (
	SNIKey  Keys = 1 << iota // sni
	ALPNKey                  // alpn
	HostKey                  // host
)

var keyNames = [...]struct {
	k    Keys
	name string
}{{SNIKey, "sni"}, {ALPNKey, "alpn"}, {HostKey, "host"}}

// Names returns the YAML keys in k: "sni", "alpn", "host", in that order.
func (k Keys) Names() []string {
	var out []string
	for _, kn := range keyNames {
		if k&kn.k != 0 {
			out = append(out, kn.name)
		}
	}
	return out
}

// String is k's YAML keys separated by commas ("sni,alpn"); "none" for none.
func (k Keys) String() string {
	if k == 0 {
		return "none"
	}
	return strings.Join(k.Names(), ",")
}

// NormalizeName returns the canonical form of a host or server name as used
// in Metadata and route conditions: surrounding spaces, one trailing dot and
// IPv6 brackets removed, ASCII lower case. "*." wildcard prefixes are kept.
func NormalizeName(s string) string {
	s = strings.TrimSpace(s)
	s = strings.TrimSuffix(s, ".")
	if len(s) >= 2 && s[0] == '[' && s[len(s)-1] == ']' {
		s = s[1 : len(s)-1]
	}
	return routeLower(s)
}

// routeLower lower-cases ASCII letters only: DNS names are ASCII (IDNs travel
// as punycode), and Unicode case folding could make distinct names equal. It
// does not allocate when s is already lower case.
func routeLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; c >= 'A' && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

func routeMatchAnyName(patterns []string, name string) bool {
	for _, p := range patterns {
		if routeMatchName(p, name) {
			return true
		}
	}
	return false
}

// routeMatchName matches name against an exact or "*.suffix" pattern without
// allocating. An empty name (no SNI, no Host) never matches.
func routeMatchName(pattern, name string) bool {
	pattern = strings.TrimSuffix(strings.TrimSpace(pattern), ".")
	name = strings.TrimSuffix(name, ".")
	if name == "" || pattern == "" {
		return false
	}
	if suffix, ok := strings.CutPrefix(pattern, "*."); ok {
		// At least one label before the suffix, separated by a dot.
		cut := len(name) - len(suffix)
		return suffix != "" && cut >= 2 && name[cut-1] == '.' && routeEqualFold(name[cut:], suffix)
	}
	if len(pattern) >= 2 && pattern[0] == '[' && pattern[len(pattern)-1] == ']' {
		pattern = pattern[1 : len(pattern)-1]
	}
	return routeEqualFold(pattern, name)
}

func routeMatchALPN(want, got []string) bool {
	for _, g := range got {
		for _, w := range want {
			if g == w {
				return true
			}
		}
	}
	return false
}

// routeEqualFold is ASCII-only case-insensitive equality (strings.EqualFold
// also folds Unicode, e.g. U+017F 'ſ' equals 's', which names must not).
func routeEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x >= 'A' && x <= 'Z' {
			x += 'a' - 'A'
		}
		if y >= 'A' && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
