// Package protocols defines what a protocol is to protoplex and ships one
// detector per built-in protocol.
//
// A detector is a pure function of the bytes a client has sent so far. It
// answers Match, NoMatch or NeedMore, so every detector can be table-, fuzz-
// and split-read-tested without sockets. The identification engine
// (internal/identify) calls detectors again each time more bytes arrive.
//
// Three types split the subject:
//
//   - [Spec] is what a protocol is: its name, detector, first bytes,
//     metadata inspector, specificity and whether the server speaks first.
//     It is all the identification engine sees.
//   - [Protocol] is a route as a user configures it: a protocol (built-in or
//     described by byte patterns) plus its [Conditions] (SNI, ALPN, Host),
//     target, balancing, pool, health checks or in-process handler.
//   - [Descriptor] is a built-in's entry in the registry ([Describe],
//     [Descriptors], [Names], [Lookup]): what the protocol is (its Spec,
//     embedded), its YAML names, its constructor, which builds the
//     Protocol from that Spec, and which route conditions apply to it.
package protocols

import (
	"bytes"
	"net"
	"regexp"
	"slices"
	"time"
)

// Result is a detector's verdict on the bytes read so far.
type Result uint8

const (
	// NeedMore: the bytes are a valid beginning of this protocol but do not
	// prove it yet. The engine reads more, within its limits.
	NeedMore Result = iota
	// Match: the bytes prove this protocol. More bytes cannot change that.
	Match
	// NoMatch: the bytes cannot be this protocol. More bytes cannot change that.
	NoMatch
)

func (r Result) String() string {
	switch r {
	case NeedMore:
		return "NeedMore"
	case Match:
		return "Match"
	case NoMatch:
		return "NoMatch"
	}
	return "Result(?)"
}

// DetectFunc is a structural detector. It must be a pure function of data:
// same bytes, same answer, however the bytes were split across reads. It must
// not retain or modify data.
type DetectFunc func(data []byte) Result

// Metadata is what a detector can tell about a matched first flight, used by
// route conditions (SNI, ALPN, Host).
type Metadata struct {
	SNI  string   // TLS server_name, lower case, no trailing dot
	ALPN []string // TLS application_layer_protocol_negotiation, in client order
	Host string   // HTTP Host header without port, lower case
}

// InspectFunc extracts route metadata from a first flight that its protocol's
// detector matched. ok is false while data is too short to tell (NeedMore).
type InspectFunc func(data []byte) (md Metadata, ok bool)

// Transports is the set of transports a protocol exists on.
type Transports uint8

// The transports.
const (
	TCP Transports = 1 << iota // a byte stream: Detect reads the first flight
	UDP                        // datagrams: Datagram reads a flow's first datagrams
)

// String is the transports' names, lower case, separated by commas ("tcp",
// "udp", "tcp,udp"); "none" for none.
func (t Transports) String() string {
	switch t {
	case 0:
		return "none"
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	case TCP | UDP:
		return "tcp,udp"
	}
	return "Transports(?)"
}

// DatagramFunc is a datagram detector: a pure function of the datagrams a
// new UDP flow has sent so far, in order. It must not retain or modify them.
// Same Match/NoMatch/NeedMore discipline as [DetectFunc]; NeedMore means
// "wait for the flow's next datagram".
type DatagramFunc func(datagrams [][]byte) Result

// DatagramInspectFunc extracts route metadata (QUIC and DTLS: SNI, ALPN)
// from the datagrams its protocol's datagram detector matched. ok is false
// while the datagrams do not tell yet (NeedMore).
type DatagramInspectFunc func(datagrams [][]byte) (md Metadata, ok bool)

// EstablishConnection marks a protocol as server-speaks-first (FTP, SMTP,
// POP3...): the client sends nothing until it sees the server's greeting, so
// such a protocol is chosen when the client stays silent (sslh's on_timeout).
// A protocol is server-first when it has at least one step; the first step's
// Silence (0 = the manager's server-first wait) is how long to wait.
type EstablishConnection struct {
	Silence time.Duration
}

// ConnHandler serves a connection in-process. It owns conn and must close it.
type ConnHandler func(conn net.Conn)

// Protocol describes one route: how to recognise a protocol from the client's
// first bytes ([Protocol.Spec]), which first flights it takes
// ([Protocol.Conditions]) and where to send them.
//
// Byte fields (MatchStartBytes, MatchBytes, MatchRegexes, CustomValidator) are
// the simple way to declare a user protocol; built-in constructors set Detect
// and, for protocols that exist on UDP, Datagram instead: structural parsers.
// When Detect or Datagram is set the byte fields are ignored.
type Protocol struct {
	// Name identifies the protocol in logs and metrics, e.g. "HTTP".
	Name string
	// Transport restricts the route to one transport: "tcp" or "udp". Empty
	// means every transport the protocol exists on: TCP when Detect is set,
	// UDP when Datagram is set, and TCP alone for a protocol declared by byte
	// fields. Byte fields with Transport "udp" apply to a flow's first
	// datagram. Any other value leaves the route on no transport.
	Transport string
	// Target is the backend: "host:port", or several separated by commas
	// ("a:6379,b:6379"), load-balanced. Empty for in-process handlers.
	Target string

	// MatchStartBytes: the data must start with one of these prefixes.
	MatchStartBytes [][]byte
	// MatchBytes: one of these must occur inside the comparison window
	// [NoComparisonBeforeBytes, NoComparisonAfterBytes) of the data.
	MatchBytes [][]byte
	// MatchRegexes: one must match the data. Go regexps work on UTF-8 runes:
	// `\xff` matches the rune U+00FF, not the byte 0xFF, so use them only for
	// text protocols and MatchStartBytes/MatchBytes for binary signatures.
	MatchRegexes []*regexp.Regexp
	// NoComparisonBeforeBytes: MatchBytes are not searched before this offset.
	NoComparisonBeforeBytes int
	// NoComparisonAfterBytes: MatchBytes are not searched at or after this
	// offset (0 = no upper bound).
	NoComparisonAfterBytes int
	// EstablishConnection marks a server-speaks-first protocol; see the type.
	EstablishConnection []EstablishConnection
	// Priority orders candidates that match the same bytes: lower is tried
	// first. Ties keep the order the routes are configured in.
	Priority int
	// CustomValidator runs after a byte match; false means "not (yet)": the
	// engine keeps reading and treats a final false as NoMatch.
	CustomValidator func(data []byte) bool

	// Detect is a structural detector (see Spec.Structural); built-in
	// protocols set it.
	Detect DetectFunc
	// FirstBytes lists every byte a first flight of this protocol can start
	// with, for the engine's first-byte index. Empty means "any byte". It
	// describes the TCP first flight: datagram detectors are not indexed.
	FirstBytes []byte
	// Inspect extracts SNI/ALPN/Host for route conditions.
	Inspect InspectFunc
	// Datagram is a structural datagram detector: the protocol exists on
	// UDP. Built-in protocols that exist on UDP set it.
	Datagram DatagramFunc
	// InspectDatagram extracts SNI/ALPN for route conditions from the
	// datagrams Datagram matched.
	InspectDatagram DatagramInspectFunc
	// Specificity ranks a sub-protocol above its generic parent when both
	// match the same bytes (WebSocket and WebDAV over HTTP). Route conditions
	// add to it automatically.
	Specificity int

	// Route conditions (all given ones must hold; see Conditions). Entries:
	// exact names or "*.example.com" (matches any name below example.com).
	SNI   []string
	ALPN  []string
	Hosts []string

	// Fallback marks the protocol that takes connections nothing matched.
	Fallback bool
	// Handler, when set, serves the connection in-process instead of
	// forwarding it; the conn replays the bytes read during identification.
	Handler ConnHandler

	// Backend options (see internal/upstream). Zero values mean defaults.
	Balance     string        // round_robin (default), weighted_round_robin, least_connections, random, first
	SendProxy   string        // "", "v1" or "v2": PROXY protocol header towards the backend
	Pool        PoolConfig    // warm pool of pre-dialed connections (opt-in)
	Health      HealthConfig  // active health checks
	IdleTimeout time.Duration // forwarded connection closed after this long without bytes (0 = manager default)
	// UDPIdleTimeout ends a UDP flow of this route after this long without a
	// datagram either way (0 = the server's, else the protocol's default).
	UDPIdleTimeout time.Duration
	// UDPResponses ends a UDP flow of this route, and frees its socket, once
	// this many datagrams came back from the backend for each datagram the
	// client sent, as nginx's proxy_responses: a request/response protocol's flow ends when answered
	// (0 = the protocol's default: 1 for DNS, no limit for the others; -1 =
	// no limit).
	UDPResponses int
	// Source lists local addresses backend connections are dialed from, in
	// turn: IPs or inclusive ranges "127.0.0.2-127.0.0.20" (see
	// upstream.ParseSource). Empty lets the kernel choose.
	Source []string
	// Transparent dials the backend from the client's own address (Linux
	// IP_TRANSPARENT, needs CAP_NET_ADMIN): the backend sees the real client.
	Transparent bool
}

// PoolConfig enables a warm pool of pre-dialed backend connections. It is
// the pool: key of a protocols: entry and what internal/upstream runs, one
// type for all three.
type PoolConfig struct {
	MinIdle     int           `yaml:"min_idle"`      // connections kept dialed per target (0 = off)
	MaxIdleTime time.Duration `yaml:"max_idle_time"` // a pooled connection older than this is discarded (default 30s)
}

// HealthConfig configures active health checks of a protocol's targets
// (the health_check: key of a protocols: entry).
type HealthConfig struct {
	Interval time.Duration `yaml:"interval"` // 0 = no active checks (passive checks still apply)
	Timeout  time.Duration `yaml:"timeout"`  // default: Interval, at most 5s
	Rise     int           `yaml:"rise"`     // consecutive successes to mark a target up (default 2)
	Fall     int           `yaml:"fall"`     // consecutive failures to mark a target down (default 3)
	Check    string        `yaml:"check"`    // "tcp" (default), "redis" (PING → +PONG), "http" (GET Path → 2xx/3xx), "dns" (a UDP query → an answer)
	Path     string        `yaml:"path"`     // for "http" (default "/")
}

// Spec is what a protocol is, as the identification engine sees it: how to
// recognise it from the client's first bytes, or from its silence.
//
// Its slices and functions are shared with whoever built it (a Protocol, a
// built-in's descriptor): they must not be modified.
type Spec struct {
	// Name identifies the protocol in logs and metrics, e.g. "HTTP".
	Name string
	// Transports are the transports the route takes flows of.
	Transports Transports
	// Detect is the detector; never nil in a Spec from [Protocol.Spec]. A
	// spec without TCP in Transports has one that answers NoMatch.
	Detect DetectFunc
	// FirstBytes lists every byte a first flight can start with, for the
	// engine's first-byte index. Empty means "any byte". It describes the
	// TCP first flight (a UDP-only protocol's lists its first datagram's
	// first bytes, so that its NoMatch stream detector is seldom asked).
	FirstBytes []byte
	// Inspect extracts route metadata; nil when the protocol has none.
	Inspect InspectFunc
	// Datagram is the datagram detector; non-nil exactly when Transports
	// has UDP.
	Datagram DatagramFunc
	// InspectDatagram extracts route metadata from datagrams; nil when the
	// protocol has none on UDP.
	InspectDatagram DatagramInspectFunc
	// Specificity ranks a sub-protocol above its generic parent.
	Specificity int
	// ServerFirst: the protocol is chosen when the client stays silent.
	ServerFirst bool
	// Silence is how long a client must stay silent for ServerFirst
	// (0 = the engine's default wait).
	Silence time.Duration
	// Structural: Detect parses the protocol's framing (built-in or Go
	// Detect detectors), so its NeedMore ends when the framing is complete
	// and a decision may wait for it. Detectors compiled from byte patterns
	// (regexes, windows, validators) may answer NeedMore forever; the
	// engine bounds the wait for them with a byte count and a settle time.
	Structural bool
}

// Spec returns what p is, for the identification engine: Detect and
// Datagram as given, or detectors compiled from the byte fields (Structural
// false), on the transports p.Transport allows (see [Protocol.Transports]).
func (p *Protocol) Spec() Spec {
	s := Spec{
		Name:        p.Name,
		Transports:  p.Transports(),
		Detect:      p.Detect,
		FirstBytes:  p.FirstBytes,
		Inspect:     p.Inspect,
		Specificity: p.Specificity,
		ServerFirst: p.ServerFirst(),
		Structural:  p.Detect != nil || p.Datagram != nil,
	}
	byteFields := p.Detect == nil && p.Datagram == nil
	switch {
	case s.Transports&TCP == 0:
		s.Detect = noMatch
	case byteFields:
		s.Detect = byteFieldDetector(p)
	}
	if s.Transports&UDP != 0 {
		s.Datagram, s.InspectDatagram = p.Datagram, p.InspectDatagram
		if byteFields {
			s.Datagram = firstDatagram(byteFieldDetector(p))
		}
	}
	if s.ServerFirst {
		s.Silence = p.EstablishConnection[0].Silence
	}
	return s
}

// protocol returns a new Protocol that is s, on every transport its
// detectors exist on: s's detectors, inspectors, name and specificity, a
// copy of its FirstBytes (the caller may change them without changing s),
// and one server-first step of s's Silence when s is server-first. Its
// [Protocol.Spec] is s when s's Transports are those of its detectors and
// s is Structural, but for the NoMatch Detect of a protocol not on TCP.
func (s *Spec) protocol() *Protocol {
	p := &Protocol{
		Name:            s.Name,
		Detect:          s.Detect,
		FirstBytes:      slices.Clone(s.FirstBytes),
		Inspect:         s.Inspect,
		Datagram:        s.Datagram,
		InspectDatagram: s.InspectDatagram,
		Specificity:     s.Specificity,
	}
	if s.ServerFirst {
		p.EstablishConnection = []EstablishConnection{{Silence: s.Silence}}
	}
	return p
}

// Transports returns the transports p's route takes flows of: those its
// protocol exists on (TCP when Detect is set, UDP when Datagram is set; TCP
// for byte fields, UDP for byte fields with Transport "udp"), narrowed to
// p.Transport when it is "tcp" or "udp". Empty for any other Transport, or
// for a Transport the protocol does not exist on.
func (p *Protocol) Transports() Transports {
	var on Transports
	switch {
	case p.Detect == nil && p.Datagram == nil:
		on = TCP
		if p.Transport == "udp" {
			on = UDP
		}
	default:
		if p.Detect != nil {
			on |= TCP
		}
		if p.Datagram != nil {
			on |= UDP
		}
	}
	switch p.Transport {
	case "":
		return on
	case "tcp":
		return on & TCP
	case "udp":
		return on & UDP
	}
	return 0
}

// noMatch is the stream detector of a protocol that does not exist on TCP.
func noMatch([]byte) Result { return NoMatch }

// firstDatagram applies a stream detector to a flow's first datagram. The
// datagram is all there is of it, so a NeedMore (a prefix not complete, a
// validator not satisfied yet) is NoMatch.
func firstDatagram(detect DetectFunc) DatagramFunc {
	return func(datagrams [][]byte) Result {
		if len(datagrams) == 0 {
			return NeedMore
		}
		if detect(datagrams[0]) == Match {
			return Match
		}
		return NoMatch
	}
}

// Conditions returns p's route conditions (SNI, ALPN, Hosts), sharing p's
// slices.
func (p *Protocol) Conditions() Conditions {
	return Conditions{SNI: p.SNI, ALPN: p.ALPN, Hosts: p.Hosts}
}

// Accepts reports whether md satisfies p's route conditions; see
// [Conditions.Accepts].
func (p *Protocol) Accepts(md Metadata) bool { return p.Conditions().Accepts(md) }

// ServerFirst reports whether the protocol is chosen on client silence.
func (p *Protocol) ServerFirst() bool { return len(p.EstablishConnection) > 0 }

// HasConditions reports whether the protocol is a conditional route.
func (p *Protocol) HasConditions() bool { return p.Conditions().Keys() != 0 }

// Clone returns a copy whose slices can be modified independently.
func (p *Protocol) Clone() *Protocol {
	c := *p
	c.MatchStartBytes = append([][]byte(nil), p.MatchStartBytes...)
	c.MatchBytes = append([][]byte(nil), p.MatchBytes...)
	c.MatchRegexes = append([]*regexp.Regexp(nil), p.MatchRegexes...)
	c.EstablishConnection = append([]EstablishConnection(nil), p.EstablishConnection...)
	c.FirstBytes = append([]byte(nil), p.FirstBytes...)
	c.SNI = append([]string(nil), p.SNI...)
	c.ALPN = append([]string(nil), p.ALPN...)
	c.Hosts = append([]string(nil), p.Hosts...)
	c.Source = append([]string(nil), p.Source...)
	return &c
}

// Detector returns the protocol's stream detector: Detect when set, one
// that answers NoMatch for a protocol only on UDP, else one compiled from
// the byte fields. Route conditions are not part of it (see Accepts).
func (p *Protocol) Detector() DetectFunc {
	switch {
	case p.Detect != nil:
		return p.Detect
	case p.Transports()&TCP == 0:
		return noMatch
	}
	return byteFieldDetector(p)
}

// byteFieldDetector compiles the byte fields into a DetectFunc. It reads
// them once, when called: later assignments to p do not change it.
func byteFieldDetector(p *Protocol) DetectFunc {
	starts := p.MatchStartBytes
	anywhere := p.MatchBytes
	regexes := p.MatchRegexes
	lo, hi := p.NoComparisonBeforeBytes, p.NoComparisonAfterBytes
	validator := p.CustomValidator
	if len(starts) == 0 && len(anywhere) == 0 && len(regexes) == 0 && validator == nil {
		return func([]byte) Result { return NoMatch }
	}
	return func(data []byte) Result {
		if len(starts) > 0 {
			r := matchPrefixes(data, starts)
			if r != Match {
				return r
			}
		}
		if len(anywhere) > 0 {
			r := matchWindow(data, anywhere, lo, hi)
			if r != Match {
				return r
			}
		}
		if len(regexes) > 0 {
			matched := false
			for _, re := range regexes {
				if re.Match(data) {
					matched = true
					break
				}
			}
			if !matched {
				// More bytes may still complete a match.
				return NeedMore
			}
		}
		if validator != nil && !validator(data) {
			return NeedMore
		}
		return Match
	}
}

// matchPrefixes: Match if data starts with a prefix, NeedMore if data is a
// proper beginning of one, NoMatch otherwise.
func matchPrefixes(data []byte, prefixes [][]byte) Result {
	res := NoMatch
	for _, pre := range prefixes {
		if len(data) >= len(pre) {
			if bytes.Equal(data[:len(pre)], pre) {
				return Match
			}
		} else if bytes.Equal(data, pre[:len(data)]) {
			res = NeedMore
		}
	}
	return res
}

// matchWindow searches needles in data[lo:hi]. NoMatch once the window is
// complete without a hit; NeedMore while it can still fill.
func matchWindow(data []byte, needles [][]byte, lo, hi int) Result {
	end := len(data)
	complete := false
	if hi > 0 && end >= hi {
		end, complete = hi, true
	}
	if lo < end {
		window := data[lo:end]
		for _, n := range needles {
			if bytes.Contains(window, n) {
				return Match
			}
		}
	}
	if complete {
		return NoMatch
	}
	return NeedMore
}
