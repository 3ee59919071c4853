package sslhconv

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// sslh is an sslh configuration, from a file, a command line or both (the
// command line applied over the file, as sslh does).
type sslh struct {
	timeout     *setting // seconds to wait before the on-timeout protocol
	onTimeout   string
	transparent bool
	udpMax      *setting
	listens     []*listen
	protos      []*proto
	// notes are the global settings without an equivalent, each already
	// phrased with what to use instead.
	notes []note
	// verboseAt is the index in notes of the one note on every verbose
	// setting, -1 before the first.
	verboseAt int
}

// verbose adds one of sslh's verbose settings to the one note on them.
func (c *sslh) verbose(line int, setting string) {
	const how = ": logging is server.log_level (debug, info, warn, error) and server.access_log (one line per connection)"
	if c.verboseAt < 0 {
		c.verboseAt = len(c.notes)
		c.notes = append(c.notes, note{line, setting + how})
		return
	}
	n := &c.notes[c.verboseAt]
	n.text = strings.TrimSuffix(n.text, how) + ", " + setting + how
}

// note is one comment the output carries, with the line it comes from.
type note struct {
	line int // 0: the command line
	text string
}

// listen is one entry of sslh's listen list (-p).
type listen struct {
	line                 int
	host, port           string
	udp, unix, keepalive bool
	proxyprotocol        bool
	maxConns             *setting
	unknown              []note
}

// proto is one entry of sslh's protocols list (--ssh, --tls...).
type proto struct {
	opt                  string // the command-line option that set it (--ssl), or ""
	line                 int
	name, host, port     string
	udp, unix, keepalive bool
	transparent          bool
	sni, alpn, regex     []string
	regexLine            int
	logLevel             int64
	proxyprotocol        int64
	udpTimeout           *setting
	notes                []note
}

func newSSLH() *sslh { return &sslh{onTimeout: "ssh", verboseAt: -1} }

// fromFile reads the settings of a parsed sslh.cfg.
func fromFile(root *value) (*sslh, error) {
	c := newSSLH()
	for _, s := range root.fields {
		if err := c.global(s); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// global applies one top-level setting.
func (c *sslh) global(s *setting) error {
	if s.name == "verbose" || strings.HasPrefix(s.name, "verbose-") {
		c.verbose(s.line, s.name+": "+show(s.v))
		return nil
	}
	switch s.name {
	case "listen":
		if s.v.kind != kList && s.v.kind != kArray {
			return typeError(s, kList)
		}
		for _, item := range s.v.items {
			l, err := listenFrom(item)
			if err != nil {
				return err
			}
			c.listens = append(c.listens, l)
		}
	case "protocols":
		if s.v.kind != kList {
			return typeError(s, kList)
		}
		for _, item := range s.v.items {
			p, err := protoFrom(item)
			if err != nil {
				return err
			}
			c.protos = append(c.protos, p)
		}
	case "timeout":
		if _, err := intOf(s); err != nil {
			return err
		}
		c.timeout = s
	case "udp_max_connections":
		if _, err := intOf(s); err != nil {
			return err
		}
		c.udpMax = s
	case "on-timeout", "on_timeout": // the file's key is on_timeout since sslh 1.21
		v, err := strOf(s)
		if err != nil {
			return err
		}
		c.onTimeout = v
	case "transparent":
		v, err := boolOf(s)
		if err != nil {
			return err
		}
		c.transparent = v
	default:
		text, ok := globalNote(s.name, show(s.v))
		if !ok {
			text = unknownNote(s)
		}
		if text != "" {
			c.notes = append(c.notes, note{s.line, text})
		}
	}
	return nil
}

// globalNote says what replaces an sslh setting protoplex has no key for;
// "" for those that need no word (the defaults of sslh's own example), ok
// false for a setting sslh does not have.
func globalNote(name, val string) (text string, ok bool) {
	is := name + ": " + val + ": "
	switch {
	case name == "user":
		return is + "protoplex does not switch users; start it as that user: systemd User=" + strings.Trim(val, `"`) + " or DynamicUser=yes (deploy/systemd/protoplex.service), and bind ports below 1024 with the socket unit or CAP_NET_BIND_SERVICE", true
	case name == "chroot":
		return is + "no chroot; confine the service with systemd (ProtectSystem=strict, RootDirectory=, TemporaryFileSystem=)", true
	case name == "pidfile":
		return is + "no PID file; the service manager tracks the process (systemd Type=exec), and SIGHUP reloads, SIGTERM drains", true
	case name == "syslog_facility" || name == "logfile":
		return is + "logs go to stderr (journald under systemd; SyslogFacility= and StandardError= in the unit); server.log_format: json for a log pipeline", true
	case name == "foreground":
		return is + "protoplex always runs in the foreground (systemd Type=exec); nothing to set", true
	case name == "inetd":
		if val == "false" {
			return is + "nothing to set: protoplex binds its own sockets (or takes them from systemd socket activation)", true
		}
		return is + "no inetd mode; systemd socket activation hands protoplex its listening sockets (docs/cli.md#socket-activation)", true
	case name == "numeric":
		return is + "protoplex never resolves client addresses: logs always show numbers", true
	case name == "version" || name == "prefix":
		return "", true
	}
	return "", false
}

func listenFrom(v *value) (*listen, error) {
	if v.kind != kGroup {
		return nil, &parseError{v.line, "listen: want a group { host: ...; port: ...; }, got " + v.kind.String()}
	}
	l := &listen{line: v.line}
	for _, s := range v.fields {
		var err error
		switch s.name {
		case "host":
			l.host, err = strOf(s)
		case "port":
			l.port, err = portOf(s)
		case "is_udp":
			l.udp, err = boolOf(s)
		case "is_unix":
			l.unix, err = boolOf(s)
		case "keepalive":
			l.keepalive, err = boolOf(s)
		case "proxyprotocol":
			l.proxyprotocol, err = boolOf(s)
		case "max_connections":
			_, err = intOf(s)
			l.maxConns = s
		default:
			l.unknown = append(l.unknown, note{s.line, unknownNote(s)})
		}
		if err != nil {
			return nil, err
		}
	}
	if l.host == "" && !l.unix {
		if v.field("host") == nil {
			return nil, &parseError{v.line, "listen: host is required"}
		}
	}
	if l.port == "" && !l.unix {
		return nil, &parseError{v.line, "listen: port is required"}
	}
	return l, nil
}

func protoFrom(v *value) (*proto, error) {
	if v.kind != kGroup {
		return nil, &parseError{v.line, "protocols: want a group { name: ...; host: ...; port: ...; }, got " + v.kind.String()}
	}
	p := &proto{line: v.line, logLevel: 1}
	for _, s := range v.fields {
		var err error
		switch s.name {
		case "name":
			p.name, err = strOf(s)
		case "host":
			p.host, err = strOf(s)
		case "port":
			p.port, err = portOf(s)
		case "is_udp":
			p.udp, err = boolOf(s)
		case "is_unix":
			p.unix, err = boolOf(s)
		case "keepalive":
			p.keepalive, err = boolOf(s)
			if p.keepalive {
				p.notes = append(p.notes, note{s.line, "keepalive: true: protoplex sets no keepalive on backend connections; server.tcp_keepalive covers the client side"})
			}
		case "transparent":
			p.transparent, err = boolOf(s)
		case "sni_hostnames":
			p.sni, err = stringsOf(s)
		case "alpn_protocols":
			p.alpn, err = stringsOf(s)
		case "regex_patterns":
			p.regex, err = stringsOf(s)
			p.regexLine = s.line
		case "log_level":
			p.logLevel, err = intOf(s)
		case "proxyprotocol":
			p.proxyprotocol, err = intOf(s)
			if err == nil && (p.proxyprotocol < 0 || p.proxyprotocol > 2) {
				err = &parseError{s.line, fmt.Sprintf("proxyprotocol: %d: want 1 or 2", p.proxyprotocol)}
			}
		case "udp_timeout":
			_, err = intOf(s)
			p.udpTimeout = s
		case "service":
			p.notes = append(p.notes, note{s.line, "service: " + show(s.v) + ": no libwrap (hosts.allow/hosts.deny); use security.ip_whitelist / ip_blacklist, or nftables"})
		case "fork":
			p.notes = append(p.notes, note{s.line, "fork: " + show(s.v) + ": no equivalent: every connection is served by the event loops"})
		case "tfo_ok":
			p.notes = append(p.notes, note{s.line, "tfo_ok: " + show(s.v) + ": no TCP Fast Open towards backends"})
		case "resolve_on_forward":
			p.notes = append(p.notes, note{s.line, "resolve_on_forward: " + show(s.v) + ": no equivalent setting"})
		case "max_connections":
			p.notes = append(p.notes, note{s.line, "max_connections: " + show(s.v) + ": no per-route cap; server.max_connections and security.max_connections_per_ip bound connections"})
		case "minlength":
			p.notes = append(p.notes, note{s.line, "minlength: " + show(s.v) + ": no equivalent; a regex route waits for more bytes until server.identify_min_bytes"})
		default:
			p.notes = append(p.notes, note{s.line, unknownNote(s)})
		}
		if err != nil {
			return nil, err
		}
	}
	if p.name == "" {
		return nil, &parseError{v.line, "protocols: name is required"}
	}
	return p, nil
}

// unknownNote: sslh reports settings it does not know ("Unknown
// settings") and goes on without them; so does the conversion.
func unknownNote(s *setting) string {
	return fmt.Sprintf("%s: %s: not an sslh setting (sslh ignores it), left out", s.name, show(s.v))
}

// show is v as written in sslh.cfg, for a comment.
func show(v *value) string {
	switch v.kind {
	case kString:
		return strconv.Quote(v.str)
	case kInt:
		return strconv.FormatInt(v.num, 10)
	case kFloat:
		return strconv.FormatFloat(v.float, 'g', -1, 64)
	case kBool:
		return strconv.FormatBool(v.bool)
	}
	return v.kind.String()
}

func typeError(s *setting, want kind) error {
	return &parseError{s.line, fmt.Sprintf("%s: want %s, got %s", s.name, want, s.v.kind)}
}

func strOf(s *setting) (string, error) {
	if s.v.kind != kString {
		return "", typeError(s, kString)
	}
	return s.v.str, nil
}

// portOf accepts a string (a number or a service name) or an integer.
func portOf(s *setting) (string, error) {
	if s.v.kind == kInt {
		return strconv.FormatInt(s.v.num, 10), nil
	}
	return strOf(s)
}

func intOf(s *setting) (int64, error) {
	if s.v.kind != kInt {
		return 0, typeError(s, kInt)
	}
	return s.v.num, nil
}

// boolOf accepts true/false and, as libconfig's C API does for a bool
// read as an int, 0 and 1.
func boolOf(s *setting) (bool, error) {
	switch {
	case s.v.kind == kBool:
		return s.v.bool, nil
	case s.v.kind == kInt && (s.v.num == 0 || s.v.num == 1):
		return s.v.num == 1, nil
	}
	return false, typeError(s, kBool)
}

func stringsOf(s *setting) ([]string, error) {
	if s.v.kind != kArray && s.v.kind != kList {
		return nil, typeError(s, kArray)
	}
	out := make([]string, 0, len(s.v.items))
	for _, it := range s.v.items {
		if it.kind != kString {
			return nil, &parseError{it.line, fmt.Sprintf("%s: want strings, got %s", s.name, it.kind)}
		}
		out = append(out, it.str)
	}
	return slices.Clip(out), nil
}
