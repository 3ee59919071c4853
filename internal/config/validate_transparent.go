package config

import (
	"fmt"
	"runtime"
	"strings"

	"github.com/darkit/protoplex/internal/upstream"
	"github.com/darkit/protoplex/protocols"
)

// transparent checks the routes whose backends dial from the client's
// address (server.transparent or the entry's transparent): Linux only, and
// not with what needs a local source address or no client at all. UDP
// flows are never transparent (a UDP backend sees protoplex's address), so
// a transparent entry that takes UDP flows from server.listen_udp is
// refused rather than half applied.
func (v *checker) transparent(c *Config) {
	for i, p := range c.Protocols {
		if !p.Transparent && !c.Server.Transparent {
			continue
		}
		where := v.at("protocols", fmt.Sprintf("#%d", i), "transparent")
		if !p.Transparent {
			where = v.at("server", "transparent")
		}
		name := fmt.Sprintf("protocols[%d] (%s)", i, p.Name)
		if runtime.GOOS != "linux" {
			v.add(where, "%s: transparent: %v (IP_TRANSPARENT), not on %s", name, upstream.ErrTransparentUnsupported, runtime.GOOS)
			return // one message says it for every entry
		}
		if len(p.Source) > 0 {
			v.add(where, "%s: transparent does not combine with source: backend connections come from the client's address", name)
		}
		if p.Pool.MinIdle > 0 {
			v.add(where, "%s: transparent does not combine with pool.min_idle: a pooled connection is dialed before its client is known", name)
		}
		if len(c.Server.ListenUDP) > 0 && onUDP(p) {
			v.add(where, "%s: transparent does not apply to UDP flows (server.listen_udp is set; a UDP backend would see protoplex's address, not the client's): add transport: tcp to this entry, or serve UDP without transparent", name)
		}
		for _, t := range p.Target {
			if strings.Contains(t, upstream.UnixPrefix) {
				v.add(where, "%s: transparent does not apply to a unix: target (a Unix socket has no source address)", name)
				break
			}
		}
	}
}

// onUDP reports whether the entry's route takes UDP flows: a built-in
// protocol that exists on UDP, or byte fields with transport: udp; not
// with transport: tcp. As protocols.Protocol.Transports, from the YAML.
func onUDP(p Protocol) bool {
	t := strings.ToLower(p.Transport)
	if t == "tcp" {
		return false
	}
	if len(p.MatchStartBytes)+len(p.MatchRegexes) > 0 {
		return t == "udp"
	}
	d, ok := protocols.Describe(p.Name)
	return ok && d.Transports&protocols.UDP != 0
}

// checkListen checks a listen address: "host:port" (an empty host is
// every interface) or "unix:/path".
func checkListen(addr string) error {
	if path, ok := strings.CutPrefix(addr, upstream.UnixPrefix); ok {
		return upstream.CheckUnixPath(path)
	}
	return checkHostPort(addr, 0, true)
}

// checkTarget checks one parsed target: "host:port" or "unix:/path" (whose
// path ParseTargets checked).
func checkTarget(addr string) error {
	if strings.HasPrefix(addr, upstream.UnixPrefix) {
		return nil
	}
	return checkHostPort(addr, 1, false)
}
