package config

import (
	"strings"
	"time"
)

// Merged returns c with the backends a cluster discovered and its load
// balancer defaults: discovered maps a protocol name (lower case) to
// targets ("addr" or "addr;w=N"), which join the first entry of that
// protocol without route conditions, or a new entry when the file has none.
// Entries that set no balance or health-check interval take balance and
// healthInterval (0: none). c is not modified.
func (c *Config) Merged(discovered map[string][]string, balance string, healthInterval time.Duration) *Config {
	merged := *c
	merged.Protocols = append([]Protocol(nil), c.Protocols...)
	defaults := func(p *Protocol) {
		if p.Balance == "" {
			p.Balance = balance
		}
		if p.HealthCheck.Interval == 0 && healthInterval > 0 {
			p.HealthCheck.Interval = healthInterval
		}
	}
	found := map[string]bool{}
	for i := range merged.Protocols {
		p := &merged.Protocols[i]
		name := strings.ToLower(p.Name)
		if targets, ok := discovered[name]; ok && len(p.SNI)+len(p.ALPN)+len(p.Host) == 0 && !found[name] {
			found[name] = true
			p.Target = append(append(StringList(nil), p.Target...), targets...)
		}
		defaults(p)
	}
	for name, targets := range discovered {
		if !found[name] && len(targets) > 0 {
			p := Protocol{Name: name, Target: append(StringList(nil), targets...)}
			defaults(&p)
			merged.Protocols = append(merged.Protocols, p)
		}
	}
	return &merged
}
