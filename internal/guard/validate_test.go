package guard

import (
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestValidateRejectsWhatMisbehaves(t *testing.T) {
	bad := map[string]Config{
		"rate NaN":          {EnableRateLimit: true, RequestsPerSecond: math.NaN()},
		"rate +Inf":         {EnableRateLimit: true, RequestsPerSecond: math.Inf(1)},
		"rate negative":     {RequestsPerSecond: -1},
		"rate absurd":       {EnableRateLimit: true, RequestsPerSecond: 1e12},
		"rate zero enabled": {EnableRateLimit: true},
		"burst negative":    {EnableRateLimit: true, RequestsPerSecond: 1, BurstSize: -1},
		"burst absurd":      {EnableRateLimit: true, RequestsPerSecond: 1, BurstSize: math.MaxInt},
		"per-IP negative":   {MaxConnectionsPerIP: -1},
		"per-IP absurd":     {MaxConnectionsPerIP: math.MaxInt},
		"threshold neg":     {EnableDDoSGuard: true, FailureThreshold: -5},
		"window negative":   {EnableDDoSGuard: true, Window: -time.Second},
		"window absurd":     {EnableDDoSGuard: true, Window: 1000 * time.Hour},
		"ban negative":      {EnableDDoSGuard: true, BanDuration: -time.Second},
		"ban absurd":        {EnableDDoSGuard: true, BanDuration: math.MaxInt64},
		"max ban absurd":    {EnableDDoSGuard: true, MaxBanDuration: 10000 * time.Hour},
		"bad whitelist":     {Whitelist: []string{"10.0.0.1", "nope"}},
		"bad blacklist":     {Blacklist: []string{"10.0.0.0/33"}},
		"list too long":     {Blacklist: make([]string, maxListEntries+1)},
	}
	for name, c := range bad {
		verr := c.Validate()
		if verr == nil {
			t.Errorf("%s: Validate accepted %+v", name, c)
			continue
		}
		g, _ := newGuard(t, Config{MaxConnectionsPerIP: 7})
		if err := g.Update(c); err == nil || err.Error() != verr.Error() {
			t.Errorf("%s: Update error %v, Validate error %v", name, err, verr)
		}
		if g.state.Load().cfg.MaxConnectionsPerIP != 7 {
			t.Errorf("%s: a rejected Update changed the config", name)
		}
	}
	good := []Config{
		{},
		{EnableRateLimit: true, RequestsPerSecond: 0.5},
		{EnableRateLimit: true, RequestsPerSecond: 1e6, BurstSize: 1e6, MaxConnectionsPerIP: 1000, EnableDDoSGuard: true},
		{EnableDDoSGuard: true, FailureThreshold: 3, Window: time.Minute, BanDuration: time.Hour, MaxBanDuration: 7 * 24 * time.Hour},
		{Whitelist: []string{"10.0.0.0/8", "::1"}, Blacklist: []string{"::ffff:192.0.2.0/120"}},
	}
	for _, c := range good {
		if err := c.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", c, err)
		}
	}
	if err := (Config{Whitelist: []string{"x"}}).Validate(); err == nil || !strings.Contains(err.Error(), `ip_whitelist: "x"`) {
		t.Errorf("error does not name the entry: %v", err)
	}
}

// TestBanDoublingNeverWraps: repeated bans with a long first ban stay at
// the cap; a shift-based doubling overflows int64 into a tiny ban.
func TestBanDoublingNeverWraps(t *testing.T) {
	first := time.Duration(1<<51 + 1) // about 26 days
	g, c := newGuard(t, Config{EnableDDoSGuard: true, FailureThreshold: 1, BanDuration: first, MaxBanDuration: MaxBanDuration})
	var bans []time.Duration
	g.SetOnBan(func(_ netip.Addr, d time.Duration) { bans = append(bans, d) })
	a := ip("198.51.100.1")
	for i := 0; i < 25; i++ {
		g.IdentifyFailed(a)
		c.add(MaxBanDuration + time.Second)
	}
	if len(bans) != 25 {
		t.Fatalf("%d bans", len(bans))
	}
	for i, d := range bans {
		if d < first || d > MaxBanDuration {
			t.Fatalf("ban %d lasts %v, want within [%v, %v]", i, d, first, MaxBanDuration)
		}
	}
}
