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
// file order.
func (c *Config) BuildProtocols() ([]*protocols.Protocol, error) {
	var out []*protocols.Protocol
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
			if pc.ServerFirst {
				p.EstablishConnection = []protocols.EstablishConnection{{}}
			}
		}
		p.Priority = pc.Priority
		p.SNI, p.ALPN, p.Hosts = pc.SNI, pc.ALPN, pc.Host
		p.Fallback = pc.Fallback
		p.Balance, p.SendProxy = pc.Balance, pc.SendProxy
		p.Pool, p.Health = pc.Pool, pc.HealthCheck
		p.IdleTimeout = pc.IdleTimeout
		p.Source = slices.Clone([]string(pc.Source))
		out = append(out, p)
	}
	return out, nil
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
