package guard

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Bounds of Config values (internal/config checks the file's security:
// block against them too). Beyond them a value is a mistake, not a policy:
// a per-source rate of a billion connections a second is no limit, a ban of
// a year is a blacklist entry, and very long durations overflow time
// arithmetic.
const (
	MaxRequestsPerSecond = 1e9
	MaxBurstSize         = 1_000_000_000
	MaxConnectionsPerIP  = 1_000_000
	MaxFailureThreshold  = 1_000_000
	MaxWindow            = 24 * time.Hour
	MaxBanDuration       = 30 * 24 * time.Hour
	maxListEntries       = 1 << 20
)

// Validate reports every value Update would reject or that would misbehave,
// without changing anything: list entries that are neither an IP nor a CIDR,
// lists over 1,048,576 entries, negative or non-finite numbers, and values
// past the bounds documented in docs/security.md. Zero values are valid (the
// feature is off or takes its default).
func (c Config) Validate() error {
	_, err := compile(c)
	return err
}

// compile checks c and builds the state Update installs.
func compile(c Config) (*state, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if r := c.RequestsPerSecond; math.IsNaN(r) || r < 0 || r > MaxRequestsPerSecond {
		bad("rate_limit.requests_per_second: %v is outside [0, %g]", r, float64(MaxRequestsPerSecond))
	} else if c.EnableRateLimit && r == 0 {
		bad("rate_limit.requests_per_second: must be > 0 when enable_rate_limit is set")
	}
	if b := c.BurstSize; b < 0 || b > MaxBurstSize {
		bad("rate_limit.burst_size: %d is outside [0, %d]", b, MaxBurstSize)
	}
	if n := c.MaxConnectionsPerIP; n < 0 || n > MaxConnectionsPerIP {
		bad("max_connections_per_ip: %d is outside [0, %d]", n, MaxConnectionsPerIP)
	}
	if n := c.FailureThreshold; n < 0 || n > MaxFailureThreshold {
		bad("ddos_guard.failure_threshold: %d is outside [0, %d]", n, MaxFailureThreshold)
	}
	for _, d := range []struct {
		key      string
		v, limit time.Duration
	}{
		{"ddos_guard.window", c.Window, MaxWindow},
		{"ddos_guard.ban_duration", c.BanDuration, MaxBanDuration},
		{"ddos_guard.max_ban_duration", c.MaxBanDuration, MaxBanDuration},
	} {
		if d.v < 0 || d.v > d.limit {
			bad("%s: %v is outside [0, %v]", d.key, d.v, d.limit)
		}
	}
	for _, l := range []struct {
		key     string
		entries []string
	}{{"ip_whitelist", c.Whitelist}, {"ip_blacklist", c.Blacklist}} {
		if len(l.entries) > maxListEntries {
			bad("%s: %d entries, at most %d", l.key, len(l.entries), maxListEntries)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	white, err := newIPSet(c.Whitelist)
	if err != nil {
		errs = append(errs, fmt.Errorf("ip_whitelist: %w", err))
	}
	black, err := newIPSet(c.Blacklist)
	if err != nil {
		errs = append(errs, fmt.Errorf("ip_blacklist: %w", err))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	c.defaults()
	return &state{cfg: c, white: white, black: black}, nil
}
