// Package sslhconv converts an sslh configuration into a protoplex one: an
// sslh.cfg (libconfig), an sslh command line (Debian's DAEMON_OPTS), or
// both, the command line applied over the file as sslh does. It is pure:
// bytes in, YAML out; service names are resolved through a function the
// caller gives (net.LookupPort in the CLI).
//
// Each sslh setting becomes the protoplex key that does the same, or a
// comment that says what to use instead; behaviour that differs (probe
// order against ranking, the catch-all, the timeout) is commented where it
// applies. docs/migrating-from-sslh.md is the table behind it.
//
// Bounds: the input is at most MaxInput bytes and MaxArgs arguments,
// nested at most MaxDepth levels, 100,000 values; the output is at most a
// few lines per input value.
package sslhconv

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/darkit/protoplex/internal/config"
)

// Input is an sslh configuration to convert.
type Input struct {
	// File is an sslh.cfg; nil when only a command line is converted.
	File []byte
	// FileName names File in errors and comments.
	FileName string
	// Args is an sslh command line (without the program name), applied
	// over File.
	Args []string
	// LookupPort resolves a service name ("xmpp-client") on network "tcp"
	// or "udp", as /etc/services does (net.LookupPort). Nil: only port
	// numbers are accepted.
	LookupPort func(network, service string) (int, error)
}

// Convert returns the protoplex YAML configuration equivalent to in, or
// the first error, as "file:line: what" (or "sslh command line: what").
func Convert(in Input) ([]byte, error) {
	c := newSSLH()
	if in.FileName == "" {
		in.FileName = "sslh.cfg"
	}
	if in.File != nil {
		root, err := parseLibconfig(in.File)
		if err == nil {
			c, err = fromFile(root)
		}
		if err != nil {
			return nil, fmt.Errorf("%s:%w", in.FileName, err)
		}
	}
	if err := c.applyArgs(in.Args); err != nil {
		return nil, fmt.Errorf("sslh command line: %w", err)
	}
	cv := &converter{in: in, c: c}
	if err := cv.convert(); err != nil {
		return nil, err
	}
	return []byte(cv.emit()), nil
}

// protoplex's bounds on what a conversion produces (internal/config
// reports them too; these keep the conversion itself linear).
const (
	maxProtocols = 1024
	maxListen    = 64
)

// converter holds one conversion's output as it is built.
type converter struct {
	in Input
	c  *sslh

	listen, listenUDP       []string
	keepalive, acceptProxy  bool
	maxConns, udpFlows      int64
	firstWait, identifyWait int64 // seconds; 0: not set
	accessLog               bool
	serverNotes             []string
	routes                  []*route
}

// route is one protocols: entry of the output, or one left out.
type route struct {
	from       string // where in the input: "sslh.cfg:12" or "--ssh"
	line       int
	sslhName   string
	name       string
	target     string
	transport  string
	sni, alpn  []string
	startBytes []string
	regexes    []string
	fallback   bool
	first      bool // server_first
	transp     bool
	sendProxy  string
	udpIdle    int64
	catchAll   bool
	notes      []string
	dropped    string // why the entry is left out (a comment only)
}

func (r *route) conditional() bool { return len(r.sni)+len(r.alpn) > 0 }

// at names line of the input.
func (cv *converter) at(line int) string {
	if line == 0 {
		return "command line"
	}
	return fmt.Sprintf("%s:%d", cv.in.FileName, line)
}

func (cv *converter) errAt(line int, format string, args ...any) error {
	if line == 0 {
		return fmt.Errorf("sslh command line: "+format, args...)
	}
	return fmt.Errorf("%s:%d: "+format, append([]any{cv.in.FileName, line}, args...)...)
}

func (cv *converter) convert() error {
	c := cv.c
	if len(c.protos) == 0 {
		return cv.errAt(0, "no protocols: nothing to route (sslh needs protocols in the file or --ssh, --tls... options)")
	}
	// protoplex's own bounds, checked before any work that grows with
	// the counts.
	if len(c.protos) > maxProtocols {
		return cv.errAt(0, "%d protocols entries, protoplex routes at most %d", len(c.protos), maxProtocols)
	}
	if len(c.listens) > 2*maxListen {
		return cv.errAt(0, "%d listen entries, protoplex serves at most %d TCP and %d UDP addresses", len(c.listens), maxListen, maxListen)
	}
	if err := cv.listens(); err != nil {
		return err
	}
	for _, p := range c.protos {
		r, err := cv.route(p)
		if err != nil {
			return err
		}
		cv.routes = append(cv.routes, r)
	}
	cv.dedupe()
	cv.catchAll()
	cv.silence()
	for _, r := range cv.routes {
		if r.dropped == "" && r.transp && c.transparent {
			r.transp = false // server.transparent covers it
		}
	}
	return nil
}

// listens converts the listen entries.
func (cv *converter) listens() error {
	tcp, uncapped := 0, 0
	for _, l := range cv.c.listens {
		for _, n := range l.unknown {
			cv.serverNotes = append(cv.serverNotes, cv.at(n.line)+": listen: "+n.text)
		}
		if l.unix {
			if l.udp {
				return cv.errAt(l.line, "listen %q: a Unix datagram socket: not supported", l.host)
			}
			if !strings.HasPrefix(l.host, "/") || !printable(l.host) {
				return cv.errAt(l.line, "listen %q: is_unix wants an absolute path as host", l.host)
			}
			cv.listen = append(cv.listen, "unix:"+l.host)
		} else {
			network := "tcp"
			if l.udp {
				network = "udp"
			}
			addr, err := cv.hostPort(l.line, "listen", l.host, l.port, network, true)
			if err != nil {
				return err
			}
			if l.udp {
				cv.listenUDP = append(cv.listenUDP, addr)
				continue
			}
			cv.listen = append(cv.listen, addr)
		}
		tcp++
		if l.keepalive && !cv.keepalive {
			cv.keepalive = true
			cv.serverNotes = append(cv.serverNotes, cv.at(l.line)+": listen keepalive: true: TCP keepalive after the kernel's default idle time (net.ipv4.tcp_keepalive_time, 2 hours), on every listener (protoplex has one setting for all)")
		}
		if l.proxyprotocol && !cv.acceptProxy {
			cv.acceptProxy = true
			cv.serverNotes = append(cv.serverNotes, cv.at(l.line)+": listen proxyprotocol: true: sslh takes a PROXY header from any client of that listener; so does this (trusted_proxies: everyone) on every listener. Narrow trusted_proxies to your load balancers' addresses")
		}
		if l.maxConns == nil {
			uncapped++
		} else {
			n := l.maxConns.v.num
			cv.maxConns += max(n, 0)
			cv.serverNotes = append(cv.serverNotes, fmt.Sprintf("%s: listen max_connections: %d: server.max_connections is one cap over all listeners (the sum of sslh's when each has one)", cv.at(l.line), n))
		}
	}
	if uncapped > 0 {
		cv.maxConns = 0 // a listener without a cap: sslh had none over all
	}
	if tcp == 0 {
		return cv.errAt(0, "no TCP listen address: give listen in the file or -p HOST:PORT (protoplex serves its routes on server.listen)")
	}
	cv.listen = dualStack(cv.listen, &cv.serverNotes)
	cv.listenUDP = dualStack(cv.listenUDP, &cv.serverNotes)
	if len(cv.listen) > maxListen || len(cv.listenUDP) > maxListen {
		return cv.errAt(0, "%d listen addresses, protoplex serves at most %d TCP and %d UDP", len(cv.listen)+len(cv.listenUDP), maxListen, maxListen)
	}
	c := cv.c
	if c.timeout != nil {
		t := c.timeout.v.num
		switch {
		case t <= 0:
			cv.serverNotes = append(cv.serverNotes, fmt.Sprintf("%s: timeout: %d: sslh went to the on-timeout target at once; protoplex waits server_first_wait (1s by default)", cv.at(c.timeout.line), t))
		case t > 585:
			cv.serverNotes = append(cv.serverNotes, fmt.Sprintf("%s: timeout: %d: protoplex waits at most 585s here (server_first_wait must end before identify_timeout, at most 10m)", cv.at(c.timeout.line), t))
			t = 585
			fallthrough
		default:
			cv.firstWait = t
			if t >= 15 {
				cv.identifyWait = t + 15
			}
		}
	} else {
		cv.firstWait = 5
		cv.serverNotes = append(cv.serverNotes, "timeout: not set: sslh's default, 5 s since sslh 1.21 (2 s in 1.20)")
	}
	if c.udpMax != nil {
		if len(cv.listenUDP) > 0 {
			cv.udpFlows = min(max(c.udpMax.v.num, 0), 1<<20)
		} else {
			cv.serverNotes = append(cv.serverNotes, fmt.Sprintf("%s: udp_max_connections: %d: no UDP listener, nothing to set", cv.at(c.udpMax.line), c.udpMax.v.num))
		}
	}
	return nil
}

// dualStack merges 0.0.0.0:P and [::]:P into :P. sslh binds them apart
// (IPV6_V6ONLY); protoplex binds :P once for both families, and a second
// bind of [::]:P would fail beside 0.0.0.0:P.
func dualStack(addrs []string, notes *[]string) []string {
	var out []string
	for _, a := range addrs {
		host, port, _ := net.SplitHostPort(a)
		other := "[::]:" + port
		if host == "::" {
			other = "0.0.0.0:" + port
		}
		switch {
		case host != "0.0.0.0" && host != "::" || !slices.Contains(addrs, other):
			if !slices.Contains(out, a) {
				out = append(out, a)
			}
		case !slices.Contains(out, ":"+port):
			out = append(out, ":"+port)
			*notes = append(*notes, fmt.Sprintf("listen 0.0.0.0:%s and [::]:%s: protoplex listens on \":%s\", every interface of both families, with one socket", port, port, port))
		}
	}
	return out
}

// hostPort returns host:port with port resolved on network, or an error
// at line; listen allows an empty host (every interface).
func (cv *converter) hostPort(line int, what, host, port, network string, listen bool) (string, error) {
	if host == "" && !listen {
		return "", cv.errAt(line, "%s: host is empty", what)
	}
	if strings.HasPrefix(host, "<") {
		return "", cv.errAt(line, "%s host %q: a placeholder (Debian's /etc/default/sslh ships --listen <change-me>:443): put the address sslh listens on", what, host)
	}
	if !validHost(host) {
		return "", cv.errAt(line, "%s host %q: not a host name or an IP address", what, host)
	}
	n, err := cv.port(port, network)
	if err != nil {
		return "", cv.errAt(line, "%s %s:%s: %w", what, host, port, err)
	}
	return net.JoinHostPort(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"), strconv.Itoa(n)), nil
}

// validHost: empty (every interface), an IP address (IPv6 in brackets or
// not), or a host name the checker accepts.
func validHost(h string) bool {
	return h == "" || config.ValidHost(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"))
}

// errUnknownService marks a service name no lookup resolves.
var errUnknownService = errors.New("not a port number or a service name this system knows (/etc/services)")

func (cv *converter) port(port, network string) (int, error) {
	if n, err := strconv.Atoi(port); err == nil {
		if n < 1 || n > 65535 {
			return 0, fmt.Errorf("port %d is not in 1..65535", n)
		}
		return n, nil
	}
	if port == "" || !printable(port) || cv.in.LookupPort == nil {
		return 0, fmt.Errorf("port %q: %w", port, errUnknownService)
	}
	n, err := cv.in.LookupPort(network, port)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %q: %w", port, errUnknownService)
	}
	return n, nil
}

// builtinFor maps sslh's probes that protoplex has built in.
var builtinFor = map[string]string{
	"ssh": "ssh", "http": "http", "tls": "tls", "ssl": "tls", "openvpn": "openvpn", "socks5": "socks5",
	"msrdp": "rdp", "wireguard": "wireguard",
}

// udpBuiltins are the built-ins above that exist on UDP.
var udpBuiltins = map[string]bool{"openvpn": true, "wireguard": true}

// userProbes are sslh's probes protoplex has no detector for, as the byte
// patterns that say the same (probe.c): hex prefixes or regexes.
var userProbes = map[string]struct {
	start, regex, how string
}{
	"tinc":      {start: "3020", how: `sslh's probe: "0 " at the start`},
	"xmpp":      {regex: "jabber", how: `sslh's probe: "jabber" in the first bytes`},
	"adb":       {start: "434e584e", how: `sslh's probe: "CNXN" at the start (and "host:" at byte 24, not checked here)`},
	"syslog":    {regex: `^([0-9]{1,3} )?<[0-9]{1,3}>`, how: "sslh's probe: a syslog priority <N> at the start"},
	"teamspeak": {start: "545333494e495431", how: `sslh's probe: "TS3INIT1" at the start`},
}

// catchAllPatterns are regexes that match every first flight: sslh's
// catch-all written as a regex entry.
var catchAllPatterns = []string{"", "^", ".*", "^.*", "(?s).*", "(?s)^.*", "^(?s).*"}

// regexWait is the note on a TCP regex route: it keeps a first flight
// that no route matches undecided.
const regexWait = "match_regexes: a regex that does not match yet may match more bytes, so a first flight no route matches waits for server.identify_min_bytes (1024) or identify_timeout (15s) before the fallback; sslh's regex probe gave up at once"

// route converts one protocols entry.
func (cv *converter) route(p *proto) (*route, error) {
	r := &route{from: cv.at(p.line), line: p.line, sslhName: p.name, sendProxy: ""}
	if p.line == 0 {
		r.from = p.opt
	}
	for _, n := range p.notes {
		r.notes = append(r.notes, n.text)
	}
	network := "tcp"
	if p.udp {
		network, r.transport = "udp", "udp"
	}
	switch {
	case p.unix:
		if !strings.HasPrefix(p.host, "/") || !printable(p.host) {
			return nil, cv.errAt(p.line, "protocols %q: is_unix wants an absolute path as host, got %q", p.name, p.host)
		}
		if p.udp {
			r.dropped = "a Unix datagram socket target: not supported"
		}
		r.target = "unix:" + p.host
	default:
		t, err := cv.hostPort(p.line, "protocols \""+p.name+"\"", p.host, p.port, network, false)
		if errors.Is(err, errUnknownService) {
			t = net.JoinHostPort(p.host, "PORT")
			r.dropped = fmt.Sprintf("port %q is not a service name this system knows (/etc/services); write its number for PORT", p.port)
		} else if err != nil {
			return nil, err
		}
		r.target = t
	}
	for _, list := range [][]string{p.sni, p.alpn} {
		for _, s := range list {
			if s == "" || !printable(s) {
				return nil, cv.errAt(p.line, "protocols %q: %q: want printable names", p.name, s)
			}
		}
	}
	if p.logLevel >= 1 {
		cv.accessLog = true
	} else {
		r.notes = append(r.notes, "log_level: 0: protoplex's access log (server.access_log) is one switch for every route; this route's connections are logged with the others")
	}
	if p.transparent {
		r.transp = true
	}
	if p.proxyprotocol > 0 {
		r.sendProxy = "v" + strconv.FormatInt(p.proxyprotocol, 10)
	}
	if p.udp {
		r.udpIdle = 60 // sslh's default udp_timeout
		if p.udpTimeout != nil {
			r.udpIdle = min(max(p.udpTimeout.v.num, 1), 86400)
		}
	}
	name := p.name
	if name == "ssl" {
		name = "tls"
	}
	if b, ok := builtinFor[name]; ok {
		r.name = b
		if p.udp && !udpBuiltins[b] {
			r.dropped = fmt.Sprintf("is_udp: protoplex's %s exists on TCP only (docs/protocols.md)", b)
		}
		if b == "wireguard" && !p.udp {
			r.dropped = "sslh's wireguard probe matches UDP only (is_udp: true): over TCP this entry matched nothing"
		}
		if b == "tls" {
			cv.tlsConditions(p, r)
		}
		if b == "http" {
			r.notes = append(r.notes, `http: sslh's probe also matched any first bytes containing "HTTP"; protoplex's needs a request line (docs/migrating-from-sslh.md)`)
		}
		return r, nil
	}
	if u, ok := userProbes[name]; ok {
		r.name = name
		if u.start != "" {
			r.startBytes = []string{u.start}
		} else {
			r.regexes = []string{u.regex}
		}
		r.notes = append(r.notes, name+": no built-in detector: a user protocol with "+u.how)
		if u.regex != "" && !p.udp {
			r.notes = append(r.notes, regexWait)
		}
		return r, nil
	}
	switch name {
	case "regex":
		r.name = "regex"
		if len(p.regex) == 0 {
			return nil, cv.errAt(p.line, `protocols "regex": regex_patterns is empty`)
		}
		high := false
		for _, pat := range p.regex {
			goPat, hi := goRegex(pat)
			high = high || hi
			if slices.Contains(catchAllPatterns, goPat) {
				r.catchAll = true
			}
			if _, err := regexp.Compile(goPat); err != nil {
				r.dropped = fmt.Sprintf("regex_patterns %q: %v (Go's RE2 syntax has no look-around, back-references or possessive quantifiers)", goPat, err)
			}
			r.regexes = append(r.regexes, goPat)
		}
		if high {
			r.notes = append(r.notes, `regex_patterns with bytes \x80-\xFF: Go's regexps match UTF-8 text, so \xC0 is the rune U+00C0, not the byte 0xC0; for binary protocols use match_start_bytes or a built-in (quic, openvpn, wireguard)`)
		}
		if p.udp {
			r.notes = append(r.notes, "is_udp: the patterns apply to a flow's first datagram")
		}
		if r.catchAll {
			r.regexes = nil
		} else if !p.udp {
			r.notes = append(r.notes, regexWait)
		}
	case "anyprot":
		r.name, r.catchAll = "anyprot", true
	case "timeout":
		r.name = "timeout"
		if cv.c.onTimeout != "timeout" {
			r.catchAll = true // probed as "always true" where it stands
		}
	default:
		return nil, cv.errAt(p.line, "protocols: %q is not an sslh probe (sslh knows ssh, openvpn, wireguard, tinc, xmpp, http, tls, adb, socks5, syslog, teamspeak, msrdp, anyprot, regex, timeout)", p.name)
	}
	if r.catchAll && p.udp {
		r.dropped = "a catch-all on UDP: protoplex's anyprot is TCP only; mark one UDP route fallback: true instead"
	}
	return r, nil
}

// tlsConditions converts sni_hostnames (glob(7) patterns in sslh) and
// alpn_protocols.
func (cv *converter) tlsConditions(p *proto, r *route) {
	r.alpn = p.alpn
	for _, s := range p.sni {
		name := strings.ToLower(s)
		if strings.HasPrefix(name, "*.") {
			suffix := strings.TrimLeft(name, "*.")
			for strings.HasPrefix(name, "*.*.") {
				name = name[2:]
			}
			if name != strings.ToLower(s) {
				r.notes = append(r.notes, fmt.Sprintf("sni_hostnames %q: protoplex's wildcard is one leading \"*.\": %q, which also matches names with one label less", s, name))
			}
			if !strings.ContainsAny(suffix, "*?[]") && suffix != "" {
				r.sni = append(r.sni, name)
				continue
			}
		} else if !strings.ContainsAny(name, "*?[]") {
			r.sni = append(r.sni, name)
			continue
		}
		r.notes = append(r.notes, fmt.Sprintf("sni_hostnames %q: a glob protoplex cannot say (exact names and a leading \"*.\" only): left out", s))
	}
	if len(p.sni) > 0 && len(r.sni) == 0 {
		r.dropped = "none of its sni_hostnames converts"
	}
}

// goRegex writes an sslh pattern (PCRE over bytes) in Go's syntax: bytes
// that are not printable ASCII as \xNN. high reports bytes 0x80-0xFF,
// which Go matches as runes, not bytes.
func goRegex(pat string) (out string, high bool) {
	var b strings.Builder
	escaped := false
	for i := 0; i < len(pat); i++ {
		c := pat[i]
		if c < 0x20 || c >= 0x7f {
			if escaped { // "\<byte>": the byte itself
				s := b.String()
				b.Reset()
				b.WriteString(s[:len(s)-1])
			}
			fmt.Fprintf(&b, `\x%02X`, c)
			high = high || c >= 0x80
			escaped = false
			continue
		}
		b.WriteByte(c)
		escaped = c == '\\' && !escaped
	}
	return b.String(), high
}

// dedupe leaves out the built-in entries sslh never reached: the same
// probe, transport and conditions as an entry above (sslh tries them in
// order, the first matching wins), and names the user protocols apart.
func (cv *converter) dedupe() {
	seen := map[string]*route{}
	names := map[string]int{}
	for _, r := range cv.routes {
		if r.dropped != "" || r.catchAll {
			continue
		}
		if len(r.startBytes)+len(r.regexes) > 0 {
			if names[r.name]++; names[r.name] > 1 {
				r.name = fmt.Sprintf("%s-%d", r.name, names[r.name])
			}
			continue
		}
		key := fmt.Sprintf("%s|%s|%v|%v", r.name, r.transport, r.sni, r.alpn)
		if first, dup := seen[key]; dup {
			r.dropped = fmt.Sprintf("sslh never reached it: %s has the same probe first", first.from)
			continue
		}
		seen[key] = r
	}
	cv.ranking()
}

// ranking comments each tls entry that protoplex ranks above a tls entry
// listed before it (SNI counts 2, ALPN 1): for a ClientHello both take,
// sslh chose the earlier entry and protoplex chooses this one.
func (cv *converter) ranking() {
	rank := func(r *route) int {
		n := 0
		if len(r.sni) > 0 {
			n += 2
		}
		if len(r.alpn) > 0 {
			n++
		}
		return n
	}
	for i, r := range cv.routes {
		if r.dropped != "" || r.name != "tls" {
			continue
		}
		for _, above := range cv.routes[:i] {
			if above.dropped == "" && above.name == "tls" && above.transport == r.transport && rank(above) < rank(r) {
				r.notes = append(r.notes, fmt.Sprintf("in sslh the tls entry %s above took the clients both entries match; protoplex ranks this one (more route conditions) first, whatever the order or priority; to keep sslh's choice, add an entry with both entries' conditions and that one's target", above.from))
				break
			}
		}
	}
}

// catchAll makes the first catch-all the fallback (anyprot) and leaves out
// the later ones; without one, sslh sends what no probe matched to its last
// protocol, which becomes the fallback.
func (cv *converter) catchAll() {
	var first *route
	for _, r := range cv.routes {
		if r.dropped != "" || !r.catchAll {
			continue
		}
		if first != nil {
			r.dropped = fmt.Sprintf("a second catch-all: sslh never reached it past %s", first.from)
			continue
		}
		first = r
		r.name, r.fallback = "anyprot", false
		last := r == cv.lastTCP()
		switch {
		case r.sslhName == "anyprot" && last:
			r.notes = append(r.notes, "anyprot: the fallback, as in sslh")
		default:
			r.notes = append(r.notes, fmt.Sprintf("%s: in sslh it matched every client that reached it; protoplex's anyprot takes only what no other route matched (docs/migrating-from-sslh.md)", r.sslhName))
		}
	}
	if first != nil {
		return
	}
	last := cv.lastTCP()
	if last == nil {
		return
	}
	why := fmt.Sprintf("sslh sends what no probe matched to its last protocol (%s)", last.from)
	if !last.conditional() {
		last.fallback = true
		last.notes = append(last.notes, "fallback: "+why+"; without it protoplex closes such connections")
		return
	}
	cv.routes = append(cv.routes, &route{from: last.from, line: last.line, sslhName: "anyprot", name: "anyprot", target: last.target,
		transp: last.transp, sendProxy: last.sendProxy, notes: []string{why + "; protoplex's fallback cannot have sni/alpn, so this anyprot takes them. Remove it to close such connections"}})
}

// lastTCP is the last route kept on TCP, or nil.
func (cv *converter) lastTCP() *route {
	for i := len(cv.routes) - 1; i >= 0; i-- {
		if r := cv.routes[i]; r.dropped == "" && r.transport != "udp" {
			return r
		}
	}
	return nil
}

// silence marks what takes the clients that stay silent: sslh's
// on-timeout protocol (by its sslh name), or its first protocol.
func (cv *converter) silence() {
	// The first entry of that name, one kept on TCP if there is one (a
	// silent client is a TCP one).
	var chosen *route
	for _, r := range cv.routes {
		if r.sslhName == cv.c.onTimeout || cv.c.onTimeout == "ssl" && r.sslhName == "tls" {
			if chosen == nil || chosen.dropped != "" || chosen.transport == "udp" {
				chosen = r
			}
		}
	}
	why := fmt.Sprintf("on-timeout %q", cv.c.onTimeout)
	if chosen == nil {
		chosen = cv.routes[0]
		why = fmt.Sprintf("on-timeout %q names no protocol, so sslh takes its first", cv.c.onTimeout)
	}
	switch {
	case chosen.dropped != "":
		cv.serverNotes = append(cv.serverNotes, fmt.Sprintf("%s: the entry %s is left out, so no route takes silent clients", why, chosen.from))
	case chosen.name == "timeout" && !chosen.catchAll:
		chosen.notes = append(chosen.notes, "timeout: takes the clients silent for server_first_wait ("+why+")")
	case chosen.transport == "udp":
		cv.serverNotes = append(cv.serverNotes, fmt.Sprintf("%s: the entry %s is on UDP, where nobody waits for a silent client", why, chosen.from))
	case chosen.conditional() || chosen.catchAll:
		cv.routes = append(cv.routes, &route{from: chosen.from, line: chosen.line, sslhName: "timeout", name: "timeout", target: chosen.target,
			transp: chosen.transp, sendProxy: chosen.sendProxy, notes: []string{why + ": clients silent for server_first_wait go to " + chosen.from + "'s target"}})
	default:
		chosen.first = true
		chosen.notes = append(chosen.notes, "server_first: takes the clients silent for server_first_wait ("+why+")")
	}
}

// printable: valid UTF-8 without control characters.
func printable(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) })
}
