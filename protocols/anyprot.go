package protocols

import "strings"

// sslh's two routes that no probe of the client's bytes selects: anyprot,
// which takes what nothing else matched, and timeout, which takes the
// clients that stay silent. Both detectors reject every byte, so neither
// ever outruns a real detector on a first flight that arrives in pieces:
// the engine reaches the fallback only once every candidate said NoMatch,
// the buffer is full or the identification deadline passed.

func init() {
	register(anyProtDescriptor, NewAnyProtProtocol)
	register(timeoutDescriptor, NewTimeoutProtocol)
}

// AnyProt is the YAML name of the catch-all protocol (sslh's anyprot): a
// configuration entry of it is the fallback.
const AnyProt = "anyprot"

// FirstBytes {0x00}: a detector that matches nothing is asked only for
// first flights starting with 0x00, not for every byte (as FTP's).
var anyProtDescriptor = Descriptor{Spec: Spec{Name: AnyProt, Transports: TCP, Detect: rejectAll, FirstBytes: []byte{0x00}},
	Summary: "matches no bytes: the fallback, takes what no other route matched"}

var timeoutDescriptor = Descriptor{Spec: Spec{Name: "timeout", Transports: TCP, Detect: rejectAll, FirstBytes: []byte{0x00}, ServerFirst: true},
	Summary: "matches no bytes: chosen on client silence only"}

// NewAnyProtProtocol routes what no other route matched, as sslh's anyprot:
// its detector matches no bytes, so it is reached only as the fallback. A
// configuration entry named anyprot is the fallback; in Go, set Fallback on
// the returned protocol.
func NewAnyProtProtocol(target string) *Protocol { return build(&anyProtDescriptor, target) }

// NewTimeoutProtocol routes the clients that send nothing for the
// server-first wait, as an sslh protocols entry named "timeout" (the
// on-timeout target): server-first, its detector matches no bytes.
func NewTimeoutProtocol(target string) *Protocol { return build(&timeoutDescriptor, target) }

// IsAnyProt reports whether a protocols: entry called name, without byte
// patterns, is the catch-all: it is then the fallback whether or not it
// says fallback: true.
func IsAnyProt(name string) bool { return strings.EqualFold(name, AnyProt) }

// rejectAll is the detector of a protocol no client bytes select.
func rejectAll([]byte) Result { return NoMatch }
