package sslhconv

import (
	"fmt"
	"strconv"
	"strings"
)

// emit writes the YAML: a header, the server section, the protocols.
// Every value is a double-quoted YAML string or a number; comments carry
// input values only through strconv.Quote, so no input can add a key.
func (cv *converter) emit() string {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	comment := func(indent, text string) { line("%s# %s", indent, text) }
	from := "the sslh command line"
	if cv.in.File != nil {
		from = strconv.Quote(cv.in.FileName)
		if len(cv.in.Args) > 0 {
			from += " and the sslh command line"
		}
	}
	line("# protoplex configuration converted from %s by protoplex -from-sslh.", from)
	line("# Check it with protoplex -check -config FILE. Comments say what has no")
	line("# equivalent and what behaves differently: docs/migrating-from-sslh.md.")
	for _, n := range cv.c.notes {
		comment("", "sslh "+cv.noteAt(n))
	}
	line("")
	line("server:")
	list := func(key string, vals []string) {
		line("  %s:", key)
		for _, v := range vals {
			line("    - %s", quote(v))
		}
	}
	for _, n := range cv.serverNotes {
		comment("  ", "sslh "+n)
	}
	list("listen", cv.listen)
	if len(cv.listenUDP) > 0 {
		list("listen_udp", cv.listenUDP)
	}
	if cv.udpFlows > 0 {
		line("  max_udp_flows: %d  # sslh udp_max_connections", cv.udpFlows)
	}
	if cv.maxConns > 0 {
		line("  max_connections: %d  # sslh listen max_connections", min(cv.maxConns, 10_000_000))
	}
	comment("  ", "sslh timeout: a client silent this long goes to the server_first route (on-timeout);")
	comment("  ", "one that sent part of a first flight is decided by identify_timeout instead")
	line("  server_first_wait: %s", quote(strconv.FormatInt(cv.firstWait, 10)+"s"))
	if cv.identifyWait > 0 {
		line("  identify_timeout: %s", quote(strconv.FormatInt(cv.identifyWait, 10)+"s"))
	}
	if cv.c.transparent {
		line("  transparent: true  # sslh transparent: needs CAP_NET_ADMIN and policy routing, docs/transparent.md")
	}
	if cv.keepalive {
		line("  tcp_keepalive: %s", quote("2h"))
	}
	if cv.acceptProxy {
		line("  accept_proxy: true")
		list("trusted_proxies", []string{"0.0.0.0/0", "::/0"})
	}
	if cv.accessLog {
		line("  access_log: true  # sslh log_level 1 (its default): one line per connection")
	}
	line("")
	line("protocols:")
	for _, r := range cv.routes {
		cv.emitRoute(&b, r)
	}
	return b.String()
}

func (cv *converter) noteAt(n note) string {
	if n.line == 0 {
		return n.text
	}
	return cv.at(n.line) + ": " + n.text
}

// emitRoute writes one protocols: entry, or its comment when left out.
func (cv *converter) emitRoute(b *strings.Builder, r *route) {
	line := func(format string, args ...any) { fmt.Fprintf(b, format+"\n", args...) }
	line("")
	line("  # %s: sslh %s", r.from, strconv.Quote(r.sslhName))
	for _, n := range r.notes {
		line("  # %s", n)
	}
	prefix := "  "
	if r.dropped != "" {
		line("  # LEFT OUT: %s", r.dropped)
		prefix = "  # "
	}
	line("%s- name: %s", prefix, quote(r.name))
	line("%s  target: %s", prefix, quote(r.target))
	if r.transport != "" {
		line("%s  transport: %s", prefix, r.transport)
	}
	for _, l := range []struct {
		key  string
		vals []string
	}{{"sni", r.sni}, {"alpn", r.alpn}, {"match_start_bytes", r.startBytes}, {"match_regexes", r.regexes}} {
		if len(l.vals) == 0 {
			continue
		}
		quoted := make([]string, len(l.vals))
		for i, v := range l.vals {
			quoted[i] = quote(v)
		}
		line("%s  %s: [%s]", prefix, l.key, strings.Join(quoted, ", "))
	}
	if r.fallback {
		line("%s  fallback: true", prefix)
	}
	if r.first {
		line("%s  server_first: true", prefix)
	}
	if r.transp {
		line("%s  transparent: true", prefix)
	}
	if r.sendProxy != "" {
		line("%s  send_proxy: %s", prefix, r.sendProxy)
	}
	if r.udpIdle > 0 {
		line("%s  udp_idle_timeout: %s", prefix, quote(strconv.FormatInt(r.udpIdle, 10)+"s"))
	}
}

// quote is s as a YAML double-quoted scalar. s is valid UTF-8 (checked on
// input), and Go's escapes (\" \\ \a \b \f \n \r \t \v \xNN \uNNNN
// \UNNNNNNNN) mean the same in YAML.
func quote(s string) string { return strconv.Quote(s) }
