package protoplex

import (
	"errors"
	"fmt"
	"github.com/darkit/protoplex/internal/testnet"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/guard"
)

// TestTruncatedConfigKeepsServing: `: > config.yaml` while editing makes an
// empty file; the watcher's reload is rejected and the old routes keep
// serving a real connection.
func TestTruncatedConfigKeepsServing(t *testing.T) {
	a := testnet.Banner(t, "A:")
	path, cm := watchedConfig(t, a)
	failed := make(chan error, 10)
	cm.OnConfigError(func(err error) { failed <- err })
	pm := NewProtocolManagerWithConfig(cm, WithLogger(discardLogger()))
	if err := pm.Err(); err != nil {
		t.Fatal(err)
	}
	addr := serveTest(t, pm)
	if got := roundTrip(t, addr, "SSH-2.0-before\r\n"); got != "A:SSH-2.0-before\r\n" {
		t.Fatalf("before: %q", got)
	}
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-failed:
		if !strings.Contains(err.Error(), "c.yaml:1: no protocols") {
			t.Fatalf("reload error: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watcher did not report the truncated file")
	}
	if err := cm.Reload(); err == nil {
		t.Fatal("an empty file reloaded")
	}
	if got := roundTrip(t, addr, "SSH-2.0-after\r\n"); got != "A:SSH-2.0-after\r\n" {
		t.Fatalf("after truncation: %q", got)
	}
	if got := cm.Config().Protocols[0].Target[0]; got != a {
		t.Fatalf("cm.Config() is not the serving config: target %q", got)
	}
}

// TestUpdateConfigAllOrNothing: whichever part of a configuration is bad,
// UpdateConfig returns an error and routes, settings and guard are all as
// before (a real connection still reaches the old backend).
func TestUpdateConfigAllOrNothing(t *testing.T) {
	a, b := testnet.Banner(t, "A:"), testnet.Banner(t, "B:")
	good, err := ParseConfig([]byte(fmt.Sprintf("server:\n  idle_timeout: \"1h\"\nsecurity:\n  ip_blacklist: [\"10.9.9.9\"]\nprotocols:\n  - name: SSH\n    target: %q\n", a)), "good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pm := NewProtocolManager(WithLogger(discardLogger()))
	if err := pm.UpdateConfig(good); err != nil {
		t.Fatal(err)
	}
	addr := serveTest(t, pm)
	// Each bad config routes SSH to B and drops the blacklist, so any part
	// applied before the error would show.
	bad := func(edit func(c *Config)) *Config {
		c := *good
		c.Server.IdleTimeout = 2 * time.Hour
		c.Security.IPBlacklist = nil
		c.Protocols = []ProtocolConfig{good.Protocols[0]}
		c.Protocols[0].Target = StringList{b}
		edit(&c)
		return &c
	}
	cases := []struct {
		part string
		cfg  *Config
	}{
		{"option", bad(func(c *Config) { c.Server.BufferSize = 1 << 30 })},
		{"trusted proxy", bad(func(c *Config) { c.Server.TrustedProxies = []string{"10.0.0.0/99"} })},
		{"protocol", bad(func(c *Config) { c.Protocols[0].Name = "Gopher" })},
		{"backend", bad(func(c *Config) { c.Protocols[0].Target = StringList{"nope"} })},
		{"balance", bad(func(c *Config) { c.Protocols[0].Balance = "fastest" })},
		{"pool", bad(func(c *Config) { c.Protocols[0].Pool.MinIdle = 2_000_000_000 })},
		{"no protocols", bad(func(c *Config) { c.Protocols = nil })},
		{"guard list", bad(func(c *Config) { c.Security.IPWhitelist = []string{"10.0.0.0/33"} })},
		{"guard value", bad(func(c *Config) {
			c.Security.EnableRateLimit = true
			c.Security.RateLimit = RateLimitConfig{RequestsPerSecond: 10, BurstSize: 2_000_000_000}
		})},
		{"ddos value", bad(func(c *Config) { c.Security.DDoSGuard.BanDuration = 1 << 62 })},
	}
	for _, c := range cases {
		t.Run(c.part, func(t *testing.T) {
			if err := pm.UpdateConfig(good); err != nil {
				t.Fatal(err)
			}
			routing, settings := pm.routing.Load(), pm.settings.Load()
			if err := pm.CheckConfig(c.cfg); err == nil {
				t.Fatal("CheckConfig accepted it")
			}
			if err := pm.UpdateConfig(c.cfg); err == nil {
				t.Fatal("UpdateConfig accepted it")
			}
			if pm.routing.Load() != routing || pm.settings.Load() != settings || pm.settings.Load().IdleTimeout != time.Hour {
				t.Fatal("routing or settings changed")
			}
			if _, r := pm.guard.Admit(netip.MustParseAddr("10.9.9.9")); r != guard.Blacklisted {
				t.Fatalf("guard changed: 10.9.9.9 is %v", r)
			}
			if got := roundTrip(t, addr, "SSH-2.0-x\r\n"); got != "A:SSH-2.0-x\r\n" {
				t.Fatalf("after the rejected update: %q", got)
			}
		})
	}
	// The same edit without the bad part applies every part.
	if err := pm.UpdateConfig(bad(func(*Config) {})); err != nil {
		t.Fatal(err)
	}
	if got := roundTrip(t, addr, "SSH-2.0-y\r\n"); got != "B:SSH-2.0-y\r\n" {
		t.Fatalf("after the good update: %q", got)
	}
	if _, r := pm.guard.Admit(netip.MustParseAddr("10.9.9.9")); r == guard.Blacklisted || pm.settings.Load().IdleTimeout != 2*time.Hour {
		t.Fatalf("good update not applied whole: guard %v, idle %v", r, pm.settings.Load().IdleTimeout)
	}
}

// TestConfigManagerAgreesWithManager: a configuration the manager refuses
// never becomes cm's current one, so callbacks such as the CLI's rebind
// never see it; one an OnConfigCheck refuses is reported like a bad file.
func TestConfigManagerAgreesWithManager(t *testing.T) {
	a := testnet.Banner(t, "A:")
	path, cm := watchedConfig(t, a)
	pm := NewProtocolManagerWithConfig(cm, WithLogger(discardLogger()))
	if err := pm.Err(); err != nil {
		t.Fatal(err)
	}
	defer pm.Close()
	var changes atomic.Int32 // the watcher reloads too
	cm.OnConfigChange(func(*Config) { changes.Add(1) })
	before := cm.Config()

	// Built in Go, so ParseConfig never saw it: the manager refuses it.
	refused := *before
	refused.Protocols = nil
	refused.Server.Listen = StringList{"127.0.0.1:1"}
	if err := cm.Apply(&refused); err == nil || !strings.Contains(err.Error(), "no protocols") {
		t.Fatalf("apply of a config the manager refuses: %v", err)
	}
	if cm.Config() != before || changes.Load() != 0 || cm.ReloadFailures() != 1 {
		t.Fatalf("cm took the refused config: current changed %v, %d change callbacks, %d failures", cm.Config() != before, changes.Load(), cm.ReloadFailures())
	}

	// An OnConfigCheck refusal, for a file ParseConfig accepts.
	veto := errors.New("vetoed")
	cm.OnConfigCheck(func(c *Config) error {
		if c.Protocols[0].Target[0] == "127.0.0.1:2" {
			return veto
		}
		return nil
	})
	reported := make(chan error, 10)
	cm.OnConfigError(func(err error) { reported <- err })
	writeConfig(t, path, "127.0.0.1:2")
	if err := cm.Reload(); !errors.Is(err, veto) {
		t.Fatalf("reload: %v", err)
	}
	if err := <-reported; !errors.Is(err, veto) {
		t.Fatalf("reported: %v", err)
	}
	if cm.Config() != before || changes.Load() != 0 {
		t.Fatal("cm took the vetoed config")
	}
	if got := pm.Protocols()[0].Target; got != a {
		t.Fatalf("manager took the vetoed config: %s", got)
	}
	writeConfig(t, path, "127.0.0.1:3")
	if err := cm.Reload(); err != nil {
		t.Fatal(err)
	}
	if cm.Config().Protocols[0].Target[0] != "127.0.0.1:3" || pm.Protocols()[0].Target != "127.0.0.1:3" || changes.Load() == 0 {
		t.Fatal("an accepted reload did not reach both")
	}
}
