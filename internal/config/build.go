package config

import (
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/darkit/protoplex/internal/guard"
	"github.com/darkit/protoplex/protocols"
)

// BuildProtocols turns the protocols: entries into *protocols.Protocol in
// file order. An entry with server_first: true, or the one
// server.on_timeout names, is chosen when the client stays silent, built
// in or not.
func (c *Config) BuildProtocols() ([]*protocols.Protocol, error) {
	var out []*protocols.Protocol
	onTimeout := c.onTimeoutEntry()
	for i, pc := range c.Protocols {
		target := strings.Join(pc.Target, ",")
		var p *protocols.Protocol
		if ctor, ok := protocols.Lookup(pc.Name); ok && len(pc.MatchStartBytes) == 0 && len(pc.MatchRegexes) == 0 {
			p = ctor(target)
		} else {
			p = &protocols.Protocol{Name: pc.Name, Target: target}
			for _, h := range pc.MatchStartBytes {
				b, err := hex.DecodeString(strings.ReplaceAll(h, " ", ""))
				if err != nil {
					return nil, fmt.Errorf("%s:%d: protocols[%d]: match_start_bytes %q: not hex", c.Source, pc.Line, i, h)
				}
				p.MatchStartBytes = append(p.MatchStartBytes, b)
				p.FirstBytes = append(p.FirstBytes, b[0])
			}
			if len(pc.MatchRegexes) > 0 {
				p.FirstBytes = nil // a regex may start with anything
			}
			for _, r := range pc.MatchRegexes {
				re, err := regexp.Compile(r)
				if err != nil {
					return nil, fmt.Errorf("%s:%d: protocols[%d]: %v", c.Source, pc.Line, i, err)
				}
				p.MatchRegexes = append(p.MatchRegexes, re)
			}
		}
		if (pc.ServerFirst || i == onTimeout) && !p.ServerFirst() {
			p.EstablishConnection = []protocols.EstablishConnection{{}}
		}
		p.Priority = pc.Priority
		p.SNI, p.ALPN, p.Hosts = pc.SNI, pc.ALPN, pc.Host
		p.Fallback = pc.IsFallback()
		p.Balance, p.SendProxy = pc.Balance, pc.SendProxy
		p.Pool, p.Health = pc.Pool, pc.HealthCheck
		p.IdleTimeout, p.UDPIdleTimeout, p.UDPResponses = pc.IdleTimeout, pc.UDPIdleTimeout, pc.UDPResponses
		p.Source = slices.Clone([]string(pc.Source))
		p.Transparent = pc.Transparent || c.Server.Transparent
		p.Transport = strings.ToLower(pc.Transport)
		if p.Health.Interval > 0 && p.Health.Check == "" && p.Transport == "udp" && strings.EqualFold(pc.Name, "dns") {
			// A DNS server on UDP alone need not listen on TCP: probe it
			// with a query.
			p.Health.Check = "dns"
		}
		out = append(out, p)
	}
	return out, nil
}

// onTimeoutEntry returns the index of the entry server.on_timeout names:
// the first of that protocol without route conditions (a silent client
// sends no SNI or Host to match), else the first of that protocol; -1 when
// on_timeout is not set or names no entry.
func (c *Config) onTimeoutEntry() int {
	if c.Server.OnTimeout == "" {
		return -1
	}
	first := -1
	for i, p := range c.Protocols {
		if !sameProtocol(p.Name, c.Server.OnTimeout) {
			continue
		}
		if len(p.SNI)+len(p.ALPN)+len(p.Host) == 0 {
			return i
		}
		if first < 0 {
			first = i
		}
	}
	return first
}

// sameProtocol reports whether names a and b name the same protocol:
// equal but for case, or aliases of one built-in ("postgres",
// "postgresql").
func sameProtocol(a, b string) bool {
	if strings.EqualFold(a, b) {
		return true
	}
	da, okA := protocols.Describe(a)
	db, okB := protocols.Describe(b)
	return okA && okB && da.Name == db.Name
}

// Guard is the security: block as the guard's configuration.
func (s Security) Guard() guard.Config {
	return guard.Config{
		Whitelist:           s.IPWhitelist,
		Blacklist:           s.IPBlacklist,
		EnableRateLimit:     s.EnableRateLimit,
		RequestsPerSecond:   s.RateLimit.RequestsPerSecond,
		BurstSize:           s.RateLimit.BurstSize,
		MaxConnectionsPerIP: s.MaxConnectionsPerIP,
		EnableDDoSGuard:     s.EnableDDoSGuard,
		FailureThreshold:    s.DDoSGuard.FailureThreshold,
		Window:              s.DDoSGuard.Window,
		BanDuration:         s.DDoSGuard.BanDuration,
		MaxBanDuration:      s.DDoSGuard.MaxBanDuration,
	}
}
