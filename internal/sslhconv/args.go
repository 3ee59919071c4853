package sslhconv

import (
	"fmt"
	"strconv"
	"strings"
)

// MaxArgs bounds a command line (Debian's DAEMON_OPTS holds a dozen).
const MaxArgs = 1024

// argOption is one option of sslh's command line.
type argOption struct {
	long  string
	short byte
	arg   bool // takes a value
}

// argOptions are sslh's options (sslh-conf.c, generated from
// sslhconf.cfg, and sslh 1.20's getopt table). A protocol option
// (--ssh HOST:PORT) is any name of argProtocols.
var argOptions = []argOption{
	{"verbose", 'v', false}, {"version", 'V', false}, {"foreground", 'f', false}, {"inetd", 'i', false},
	{"numeric", 'n', false}, {"transparent", 0, false}, {"timeout", 't', true}, {"udp_max_connections", 0, true},
	{"user", 'u', true}, {"pidfile", 'P', true}, {"chroot", 'C', true}, {"syslog_facility", 0, true},
	{"logfile", 0, true}, {"on-timeout", 0, true}, {"prefix", 0, true}, {"config", 'F', true}, {"listen", 'p', true},
}

// argProtocols maps sslh's protocol options to the probe they set up:
// --ssl is --tls.
var argProtocols = map[string]string{
	"ssh": "ssh", "tls": "tls", "ssl": "tls", "openvpn": "openvpn", "tinc": "tinc", "wireguard": "wireguard",
	"xmpp": "xmpp", "http": "http", "adb": "adb", "socks5": "socks5", "syslog": "syslog", "msrdp": "msrdp",
	"anyprot": "anyprot",
}

// applyArgs applies an sslh command line over c (a file's settings, or
// none), as sslh does: -p adds a listener, --ssh HOST:PORT sets the target
// of the first ssh entry or adds one, other options replace the file's.
func (c *sslh) applyArgs(args []string) error {
	if len(args) > MaxArgs {
		return fmt.Errorf("%d arguments, at most %d", len(args), MaxArgs)
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, val, hasVal := "", "", false
		switch {
		case strings.HasPrefix(a, "--") && len(a) > 2:
			name, val, hasVal = strings.Cut(a[2:], "=")
		case strings.HasPrefix(a, "-") && len(a) > 1:
			o, ok := shortOption(a[1])
			if !ok {
				return fmt.Errorf("%s: not an sslh option", a)
			}
			name = o.long
			if len(a) > 2 {
				if !o.arg {
					return fmt.Errorf("%s: -%c takes no value", a, a[1])
				}
				val, hasVal = a[2:], true // -F/etc/sslh.cfg, -p0.0.0.0:443
			}
		default:
			return fmt.Errorf("%q: not an option (sslh takes no arguments)", a)
		}
		o, isOpt := longOption(name)
		probe, isProto := argProtocols[name]
		isVerbose := strings.HasPrefix(name, "verbose-") && len(name) > len("verbose-")
		takes := isProto || isVerbose || isOpt && o.arg
		switch {
		case !isOpt && !isProto && !isVerbose:
			return fmt.Errorf("--%s: not an sslh option", name)
		case !takes && hasVal && name != "verbose":
			return fmt.Errorf("--%s takes no value", name)
		case takes && !hasVal:
			if i+1 >= len(args) {
				return fmt.Errorf("--%s needs a value", name)
			}
			i++
			val = args[i]
		case name == "verbose" && !hasVal && i+1 < len(args):
			if _, err := strconv.Atoi(args[i+1]); err == nil { // sslh 2: -v N
				i++
				val = args[i]
			}
		}
		if err := c.applyArg(name, probe, val); err != nil {
			return err
		}
	}
	return nil
}

func shortOption(b byte) (argOption, bool) {
	for _, o := range argOptions {
		if o.short == b {
			return o, true
		}
	}
	return argOption{}, false
}

func longOption(name string) (argOption, bool) {
	for _, o := range argOptions {
		if o.long == name {
			return o, true
		}
	}
	return argOption{}, false
}

// applyArg applies one option and its value.
func (c *sslh) applyArg(name, probe, val string) error {
	arg := func() *setting { // the value as a setting, for notes and numbers
		if n, err := strconv.ParseInt(val, 10, 64); err == nil {
			return &setting{name: name, v: &value{kind: kInt, num: n}}
		}
		return &setting{name: name, v: &value{kind: kString, str: val}}
	}
	switch {
	case probe != "":
		host, port, err := splitHostPort(name, val)
		if err != nil {
			return err
		}
		for _, p := range c.protos {
			if p.name == probe {
				p.host, p.port, p.unix = host, port, false
				return nil
			}
		}
		c.protos = append(c.protos, &proto{opt: "--" + name, name: probe, host: host, port: port, logLevel: 1})
	case name == "listen":
		host, port, err := splitHostPort(name, val)
		if err != nil {
			return err
		}
		c.listens = append(c.listens, &listen{host: host, port: port})
	case name == "config":
		return fmt.Errorf("-F %s: give the configuration file to convert with -from-sslh %s (the command line is applied over it)", val, val)
	case name == "timeout" || name == "udp_max_connections":
		s := arg()
		if s.v.kind != kInt {
			return fmt.Errorf("--%s %q: want a number of seconds", name, val)
		}
		if name == "timeout" {
			c.timeout = s
		} else {
			c.udpMax = s
		}
	case name == "on-timeout":
		c.onTimeout = val
	case name == "transparent":
		c.transparent = true
	case name == "verbose" || strings.HasPrefix(name, "verbose-"):
		c.verbose(0, "--"+name+cond(val != "", " "+val, ""))
	default:
		shown := "true"
		if val != "" {
			shown = show(arg().v)
		}
		if text, _ := globalNote(name, shown); text != "" {
			c.notes = append(c.notes, note{0, "--" + text})
		}
	}
	return nil
}

func cond(ok bool, a, b string) string {
	if ok {
		return a
	}
	return b
}

// splitHostPort splits sslh's HOST:PORT (its pattern "(.+):(\w+)": the
// last colon; [::1]:443 for IPv6).
func splitHostPort(opt, val string) (host, port string, err error) {
	i := strings.LastIndexByte(val, ':')
	if i <= 0 || i == len(val)-1 {
		return "", "", fmt.Errorf("--%s %q: want HOST:PORT", opt, val)
	}
	return strings.TrimSuffix(strings.TrimPrefix(val[:i], "["), "]"), val[i+1:], nil
}

// SplitArgs splits a command line as a POSIX shell splits words: blanks
// separate, single quotes keep everything, double quotes and backslashes
// as in sh. A leading DAEMON_OPTS= (a line of /etc/default/sslh) is
// dropped, and so is an sslh program name.
func SplitArgs(line string) ([]string, error) {
	line = strings.TrimSpace(line)
	if rest, ok := strings.CutPrefix(line, "DAEMON_OPTS="); ok {
		line = rest
		if len(line) >= 2 && (line[0] == '"' || line[0] == '\'') && line[len(line)-1] == line[0] {
			line = line[1 : len(line)-1]
		}
	}
	var out []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
			continue
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("a ' is never closed")
			}
			cur.WriteString(line[i+1 : i+1+j])
			i += j + 1
		case c == '"':
			i++
			for ; i < len(line) && line[i] != '"'; i++ {
				if line[i] == '\\' && i+1 < len(line) && strings.IndexByte("\"\\$`", line[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(line[i])
			}
			if i >= len(line) {
				return nil, fmt.Errorf("a \" is never closed")
			}
		case c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		default:
			cur.WriteByte(c)
		}
		inWord = true
		if len(out) > MaxArgs {
			return nil, fmt.Errorf("more than %d arguments", MaxArgs)
		}
	}
	if inWord {
		out = append(out, cur.String())
	}
	if len(out) > 0 && (out[0] == "sslh" || strings.HasSuffix(out[0], "/sslh") || strings.Contains(out[0], "sslh-")) && !strings.HasPrefix(out[0], "-") {
		out = out[1:]
	}
	return out, nil
}
