package protocols

import (
	"fmt"
	"slices"
	"strings"
)

// Constructor builds a built-in protocol routed to target.
type Constructor func(target string) *Protocol

// Descriptor is a built-in protocol's registry entry: what the protocol is
// (its [Spec]), what a configuration may call it and what routes of it may
// say. Its constructor builds a [Protocol] from that Spec, so the two always
// agree: the constructed protocol's [Protocol.Spec] is the descriptor's,
// except that a protocol not on TCP gets a Detect that answers NoMatch.
type Descriptor struct {
	// Spec is what the protocol is. Name is the canonical display name
	// ("TLS", "PostgreSQL"), as the constructor's Protocol.Name; its lower
	// case is a YAML name. Transports are the transports the protocol
	// exists on: TCP exactly when Detect is set, UDP exactly when Datagram
	// is set. Structural is true: every built-in detector parses its
	// protocol's framing.
	Spec
	// Aliases are the other YAML names (lower case), e.g. "postgres".
	Aliases []string
	// New builds the protocol routed to a target.
	New Constructor

	// Routable is the set of route conditions that apply: SNI and ALPN for
	// TLS, Host for HTTP, WebSocket and WebDAV, none for the others (their
	// detectors extract no metadata).
	Routable Keys
	// Summary is one line on how the protocol is recognised, for listings.
	Summary string
}

// YAMLNames returns every name a configuration may use for d: its Name in
// lower case, then its aliases.
func (d Descriptor) YAMLNames() []string {
	return append([]string{strings.ToLower(d.Name)}, d.Aliases...)
}

// build returns d's protocol routed to target, as every built-in
// constructor does (see Spec.protocol).
func build(d *Descriptor, target string) *Protocol {
	p := d.protocol()
	p.Target = target
	return p
}

// registry maps every accepted name, lower case, to its descriptor. Each
// protocol's file registers its descriptor from an init function; the map is
// read-only once package initialisation is done, so it needs no lock.
var registry = map[string]*Descriptor{}

// register adds d under its name and aliases, with ctor as d.New and
// Structural set (built-in detectors parse their protocol's framing). ctor
// comes apart from d because it builds from d's variable: a descriptor
// literal naming it would be an initialisation cycle. A duplicate name, or
// a descriptor without a detector or constructor, is a defect of the build,
// so it panics (the registry tests load the package), as do transports that
// disagree with the detectors (TCP exactly when Detect is set, UDP exactly
// when Datagram is set) and a Silence on a protocol that is not
// server-first. Every name is checked before any is added, so a rejected
// descriptor leaves the registry as it was.
func register(d Descriptor, ctor Constructor) {
	d.Aliases = slices.Clone(d.Aliases)
	d.New = ctor
	d.Structural = true
	names := d.YAMLNames()
	for i, n := range names {
		if n != strings.ToLower(n) || n == "" {
			panic(fmt.Sprintf("protocols: %s: name %q must be non-empty lower case", d.Name, n))
		}
		if old, dup := registry[n]; dup {
			panic(fmt.Sprintf("protocols: %q registered by both %s and %s", n, old.Name, d.Name))
		}
		if slices.Contains(names[:i], n) {
			panic(fmt.Sprintf("protocols: %s lists %q twice", d.Name, n))
		}
	}
	if d.New == nil {
		panic(fmt.Sprintf("protocols: %s has no constructor", d.Name))
	}
	if d.Transports == 0 || d.Transports&^(TCP|UDP) != 0 {
		panic(fmt.Sprintf("protocols: %s has transports %v", d.Name, d.Transports))
	}
	if (d.Transports&TCP != 0) != (d.Detect != nil) {
		panic(fmt.Sprintf("protocols: %s: transports %v but Detect set: %t", d.Name, d.Transports, d.Detect != nil))
	}
	if (d.Transports&UDP != 0) != (d.Datagram != nil) {
		panic(fmt.Sprintf("protocols: %s: transports %v but Datagram set: %t", d.Name, d.Transports, d.Datagram != nil))
	}
	if d.Silence != 0 && !d.ServerFirst {
		panic(fmt.Sprintf("protocols: %s waits a silence but is not server-first", d.Name))
	}
	if d.InspectDatagram != nil && d.Datagram == nil {
		panic(fmt.Sprintf("protocols: %s inspects datagrams it has no detector for", d.Name))
	}
	for _, n := range names {
		registry[n] = &d
	}
}

// Describe returns the descriptor of the built-in protocol called name, by
// its Name or an alias, case-insensitively ("http", "HTTP", "Http").
func Describe(name string) (Descriptor, bool) {
	d, ok := registry[strings.ToLower(name)]
	if !ok {
		return Descriptor{}, false
	}
	return d.clone(), true
}

func (d *Descriptor) clone() Descriptor {
	c := *d
	c.Aliases = slices.Clone(d.Aliases)
	c.FirstBytes = slices.Clone(d.FirstBytes)
	return c
}

// Descriptors returns one descriptor per built-in protocol, sorted by lower
// case Name.
func Descriptors() []Descriptor {
	var out []Descriptor
	for n, d := range registry {
		if n == strings.ToLower(d.Name) {
			out = append(out, d.clone())
		}
	}
	slices.SortFunc(out, func(a, b Descriptor) int {
		return strings.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name))
	})
	return out
}

// Lookup returns the constructor of the built-in protocol called name, as
// Describe finds it.
func Lookup(name string) (Constructor, bool) {
	d, ok := registry[strings.ToLower(name)]
	if !ok {
		return nil, false
	}
	return d.New, true
}

// Names returns every accepted built-in name (Names and aliases), lower case,
// sorted.
func Names() []string {
	out := make([]string, 0, len(registry))
	for n := range registry {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Suggest returns the accepted name closest to name (case-insensitively) by
// edit distance, when it is at most 2: "TSL" suggests "tls". Among names at
// the same distance the first in sorted order wins. An accepted name
// suggests itself, lower case.
func Suggest(name string) (string, bool) {
	name = strings.ToLower(name)
	best, bestDist := "", 3
	for _, n := range Names() {
		if d := editDistance(name, n, bestDist); d < bestDist {
			best, bestDist = n, d
		}
	}
	return best, best != ""
}

// editDistance is the edit distance between a and b in bytes, counting an
// insertion, a deletion, a substitution or a swap of two adjacent bytes as
// one edit (optimal string alignment: "tsl" is one edit from "tls"), or
// limit when it is at least limit.
func editDistance(a, b string, limit int) int {
	if len(a)-len(b) >= limit || len(b)-len(a) >= limit {
		return limit
	}
	// Rows i-2, i-1 and i of the dynamic-programming table.
	prev2, prev, cur := make([]int, len(b)+1), make([]int, len(b)+1), make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return min(prev[len(b)], limit)
}
