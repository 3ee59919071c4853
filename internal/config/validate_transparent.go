package config

import (
	"fmt"
	"runtime"
	"strings"

	"github.com/darkit/protoplex/internal/upstream"
)

// transparent checks the routes whose backends dial from the client's
// address (server.transparent or the entry's transparent): Linux only, and
// not with what needs a local source address or no client at all.
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
		for _, t := range p.Target {
			if strings.Contains(t, upstream.UnixPrefix) {
				v.add(where, "%s: transparent does not apply to a unix: target (a Unix socket has no source address)", name)
				break
			}
		}
	}
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
