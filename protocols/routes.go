package protocols

import "strings"

// Accepts reports whether md satisfies every route condition set on p:
//
//   - SNI: md.SNI equals one entry, or is below a "*.example.com" entry
//     (a.example.com, a.b.example.com; not example.com itself);
//   - ALPN: at least one of the client's ALPN values is listed in p.ALPN
//     (ALPN identifiers are opaque byte strings, compared exactly, RFC 7301);
//   - Hosts: md.Host matches like SNI.
//
// Names compare case-insensitively and ignore a trailing dot. A protocol
// without conditions accepts everything.
func (p *Protocol) Accepts(md Metadata) bool {
	if len(p.SNI) > 0 && !routeMatchAnyName(p.SNI, md.SNI) {
		return false
	}
	if len(p.ALPN) > 0 && !routeMatchALPN(p.ALPN, md.ALPN) {
		return false
	}
	if len(p.Hosts) > 0 && !routeMatchAnyName(p.Hosts, md.Host) {
		return false
	}
	return true
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
