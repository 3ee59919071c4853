package config

import (
	"fmt"
	"github.com/darkit/protoplex/internal/testnet"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/protocols"
)

func TestSeedConfigParses(t *testing.T) {
	c, err := Load("../../testdata/config/seed.yaml")
	if err != nil {
		if _, ok := protocols.Lookup("mqtt"); !ok && strings.Contains(err.Error(), "MQTT") {
			t.Skip("MQTT detector not registered yet")
		}
		t.Fatal(err)
	}
	if c.Server.MaxConnections != 20000 || c.Server.IdentifyTimeout != 5*time.Second || c.Server.BufferSize != 131072 {
		t.Fatalf("server: %+v", c.Server)
	}
	if !c.Security.EnableRateLimit || c.Security.RateLimit.BurstSize != 100 || len(c.Security.IPWhitelist) != 2 {
		t.Fatalf("security: %+v", c.Security)
	}
	if c.Distributed.LoadBalancer.Strategy != "weighted_round_robin" || len(c.Distributed.EtcdEndpoints) != 3 {
		t.Fatalf("distributed: %+v", c.Distributed)
	}
	ps, err := c.BuildProtocols()
	if err != nil || len(ps) != 3 || ps[0].Name != "HTTP" || ps[0].Priority != 1 || ps[0].Target != "web-server:80" {
		t.Fatalf("protocols: %v %+v", err, ps)
	}
}

func TestDefaultConfig(t *testing.T) {
	c := Default()
	if c.Server.Listen[0] != "127.0.0.1:9090" || c.Monitoring.BindAddress != "127.0.0.1" || c.Monitoring.MetricsPort != 9091 || c.Monitoring.HealthCheckPort != 9092 || len(c.Protocols) != 4 {
		t.Fatalf("%+v", c)
	}
}

func TestBadConfigsNameFileAndLine(t *testing.T) {
	cases := []struct{ name, yaml, want string }{
		{"unknown key", "server:\n  listen: \":1\"\n  max_conections: 5\n", "bad.yaml:3: "},
		{"bad duration", "server:\n  identify_timeout: \"5x\"\n", "bad.yaml:2: "},
		{"min bytes over buffer", "server:\n  buffer_size: 1024\n  identify_min_bytes: 2048\n", "bad.yaml:3: server.identify_min_bytes"},
		{"bad port", "protocols:\n  - name: SSH\n    target: \"h:70000\"\n", "bad.yaml:3: protocols[0] (SSH): target \"h:70000\": invalid port"},
		{"unknown protocol", "protocols:\n  - name: Gopher\n    target: \"h:70\"\n", "bad.yaml:2: protocols[0] (Gopher): \"Gopher\" is not a built-in"},
		{"bad hex", "protocols:\n  - name: Mine\n    target: \"h:70\"\n    match_start_bytes: [\"zz\"]\n", "bad.yaml:4: "},
		{"bad cidr", "security:\n  ip_blacklist:\n    - \"10.0.0.0/33\"\n", "bad.yaml:3: security.ip_blacklist[0]"},
		{"sni on ssh", "protocols:\n  - name: SSH\n    target: \"h:22\"\n    sni: [\"a\"]\n", "bad.yaml:4: protocols[0] (SSH): sni applies only to DTLS, QUIC, TLS"},
		{"host on a user protocol", "protocols:\n  - name: X\n    target: \"h:22\"\n    match_start_bytes: [\"aa\"]\n    host: [\"a\"]\n", "bad.yaml:5: protocols[0] (X): host applies only to HTTP, WebDAV, WebSocket"},
		{"misspelt name", "protocols:\n  - name: TSL\n    target: \"h:443\"\n", `"TSL" is not a built-in protocol (did you mean "tls"?)`},
		{"two fallbacks", "protocols:\n  - name: SSH\n    target: \"h:22\"\n    fallback: true\n  - name: HTTP\n    target: \"h:80\"\n    fallback: true\n", "bad.yaml:7: "},
		{"bad balance", "protocols:\n  - name: SSH\n    target: \"h:22\"\n    balance: fastest\n", "bad.yaml:4: "},
		{"negative keepalive", "server:\n  tcp_keepalive: \"-1s\"\n", "bad.yaml:2: server.tcp_keepalive: must not be negative"},
		{"not yaml", "server: [\n", "bad.yaml:"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml), "bad.yaml")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want error containing %q, got %v", c.want, err)
			}
		})
	}
	// All errors are reported, not only the first.
	_, err := Parse([]byte("protocols:\n  - name: SSH\n    target: \"h:0\"\n  - name: HTTP\n    target: \"nope\"\n"), "bad.yaml")
	if err == nil || !strings.Contains(err.Error(), "bad.yaml:3") || !strings.Contains(err.Error(), "bad.yaml:5") {
		t.Fatalf("want both errors, got %v", err)
	}
}

func TestUserProtocolFromYAML(t *testing.T) {
	c, err := Parse([]byte("protocols:\n  - name: CustomBinary\n    target: \"127.0.0.1:9000\"\n    match_start_bytes: [\"aa55\"]\n"), "u.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ps, err := c.BuildProtocols()
	if err != nil {
		t.Fatal(err)
	}
	d := ps[0].Detector()
	if d([]byte{0xAA, 0x55, 1}) != protocols.Match || d([]byte{0xAA, 0x56}) != protocols.NoMatch {
		t.Fatal("user protocol does not detect its bytes")
	}
}

func writeConfig(t *testing.T, path, target string) {
	t.Helper()
	testnet.WriteFile(t, path, "protocols:\n  - name: SSH\n    target: \""+target+"\"\n")
}

// watchedConfig writes a one-protocol config forwarding to target and
// watches it with a ConfigManager that the test's end closes.
func watchedConfig(t *testing.T, target string) (path string, cm *Watcher) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "c.yaml")
	writeConfig(t, path, target)
	cm, err := Watch(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cm.Close() })
	return path, cm
}

func TestConfigManagerReloads(t *testing.T) {
	path, cm := watchedConfig(t, "127.0.0.1:1")
	changed := make(chan string, 10)
	failed := make(chan error, 10)
	cm.OnConfigChange(func(c *Config) { changed <- c.Protocols[0].Target[0] })
	cm.OnConfigError(func(err error) { failed <- err })
	expect := func(want string) {
		t.Helper()
		select {
		case got := <-changed:
			if got != want {
				t.Fatalf("reloaded %q, want %q", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no reload to %s", want)
		}
	}
	// In-place write.
	writeConfig(t, path, "127.0.0.1:2")
	expect("127.0.0.1:2")
	// Replace by rename, as vim and kubectl do.
	tmp := filepath.Join(filepath.Dir(path), ".c.yaml.swp")
	writeConfig(t, tmp, "127.0.0.1:3")
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	expect("127.0.0.1:3")
	// Invalid: rejected with file:line, the current config stays.
	os.WriteFile(path, []byte("protocols:\n  - name: SSH\n    target: \"bad\"\n"), 0o644)
	select {
	case err := <-failed:
		if !strings.Contains(err.Error(), "c.yaml:3") {
			t.Fatalf("error without file:line: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("invalid file not reported")
	}
	if got := cm.Config().Protocols[0].Target[0]; got != "127.0.0.1:3" {
		t.Fatalf("current config changed to %q", got)
	}
	// Reload (the CLI calls it on SIGHUP). The write triggers the watcher
	// too: the edit is applied once, by whichever comes first.
	writeConfig(t, path, "127.0.0.1:4")
	if err := cm.Reload(); err != nil {
		t.Fatal(err)
	}
	expect("127.0.0.1:4")
	if cm.ReloadFailures() < 1 || cm.Reloads() < 3 {
		t.Fatalf("reloads %d failures %d", cm.Reloads(), cm.ReloadFailures())
	}
}

func checkFile(path string) error {
	_, err := Load(path)
	return err
}

// TestMonitoringEnableFalse: enable_metrics/enable_health_check false turn
// their port off; left out, the port given is served.
func TestMonitoringEnableFalse(t *testing.T) {
	const proto = "protocols:\n  - name: SSH\n    target: \"127.0.0.1:22\"\n"
	for _, c := range []struct {
		yaml            string
		metrics, health int
	}{
		{"monitoring:\n  enable_metrics: false\n  metrics_port: 9091\n  enable_health_check: false\n  health_check_port: 9092\n", 0, 0},
		{"monitoring:\n  enable_metrics: true\n  metrics_port: 9091\n  enable_health_check: false\n  health_check_port: 9092\n", 9091, 0},
		{"monitoring:\n  metrics_port: 9091\n  health_check_port: 9092\n", 9091, 9092},
	} {
		cfg, err := Parse([]byte(c.yaml+proto), "m.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if m := cfg.Monitoring; m.MetricsPort != c.metrics || m.HealthCheckPort != c.health {
			t.Errorf("%q: ports %d, %d, want %d, %d", c.yaml, m.MetricsPort, m.HealthCheckPort, c.metrics, c.health)
		}
	}
}

// TestSyntaxErrorLine: a YAML syntax error names the line that is wrong,
// not the line where the enclosing block began (yaml.v3 reports the
// "protocols:" of line 3 for all of these).
func TestSyntaxErrorLine(t *testing.T) {
	head := "server:\n  listen: \"127.0.0.1:0\"\nprotocols:\n  - name: SSH\n    target: \"127.0.0.1:22\"\n"
	for _, tc := range []struct {
		name, yaml string
		line       int
	}{
		{"a key indented one space too little", head + "   priority: 1\n", 6},
		{"a key indented too much", head + "      priority: 1\n", 6},
		{"an item's key under the wrong column", head + "  - name: HTTP\n   target: \"127.0.0.1:80\"\n", 7},
		{"a key at no level of the list", head + " sni: a\n", 6},
		{"after more entries", head + "  - name: HTTP\n    target: \"127.0.0.1:80\"\n  - name: TLS\n    target: \"127.0.0.1:443\"\n   sni: a\nmonitoring:\n  metrics_port: 0\n", 10},
		{"no newline at the end", head + "   priority: 1", 6},
	} {
		_, err := Parse([]byte(tc.yaml), "c.yaml")
		if want := fmt.Sprintf("c.yaml:%d: ", tc.line); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: %v, want an error at %s", tc.name, err, want)
		}
	}
	// A flow list cut over lines keeps its own line: its prefixes fail
	// with another message.
	_, err := Parse([]byte(head+"    alpn: [h2,\n      http/1.1\n"), "c.yaml")
	if err == nil || !strings.HasPrefix(err.Error(), "c.yaml:") {
		t.Errorf("unclosed flow list: %v", err)
	}
}

// TestAnyProtIsTheFallback: an entry named anyprot (sslh's catch-all) is
// the fallback without saying so, and with fallback: true too; a timeout
// entry is chosen on silence. Before anyprot was a built-in the first was
// refused as a user protocol without match fields.
func TestAnyProtIsTheFallback(t *testing.T) {
	for _, extra := range []string{"", "    fallback: true\n"} {
		c, err := Parse([]byte("protocols:\n  - name: SSH\n    target: h:22\n  - name: anyprot\n    target: h:443\n"+extra+"  - name: timeout\n    target: h:13\n"), "a.yaml")
		if err != nil {
			t.Fatalf("%q: %v", extra, err)
		}
		ps, err := c.BuildProtocols()
		if err != nil {
			t.Fatal(err)
		}
		if ps[0].Fallback || !ps[1].Fallback || ps[1].Name != protocols.AnyProt || ps[2].Fallback {
			t.Fatalf("%q: fallback marks %v %v %v", extra, ps[0].Fallback, ps[1].Fallback, ps[2].Fallback)
		}
		if !ps[2].ServerFirst() || ps[1].ServerFirst() {
			t.Fatalf("%q: timeout server-first %v, anyprot %v", extra, ps[2].ServerFirst(), ps[1].ServerFirst())
		}
		for _, p := range ps[1:] {
			if p.Detector()([]byte{0}) != protocols.NoMatch {
				t.Fatalf("%s matches a byte", p.Name)
			}
		}
	}
	// With byte patterns the name is a user protocol's, not the catch-all.
	c, err := Parse([]byte("protocols:\n  - name: anyprot\n    target: h:1\n    match_start_bytes: [aa]\n"), "u.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Protocols[0].IsFallback() {
		t.Fatal("a user protocol called anyprot is the fallback")
	}
}

// TestRepeatedEntryAsFallback: a second entry of a protocol, the same
// conditions, is refused as one that could never match, unless it is the
// fallback, which takes what nothing matched (its detector's matches go to
// the first entry).
func TestRepeatedEntryAsFallback(t *testing.T) {
	two := "protocols:\n  - name: HTTP\n    target: h:80\n  - name: HTTP\n    target: h:8080\n"
	if _, err := Parse([]byte(two), "d.yaml"); err == nil || !strings.Contains(err.Error(), "d.yaml:4: protocols[1] (HTTP): same protocol and conditions as protocols[0]") {
		t.Fatalf("a plain repeat: %v", err)
	}
	c, err := Parse([]byte(two+"    fallback: true\n"), "d.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ps, err := c.BuildProtocols()
	if err != nil || ps[0].Fallback || !ps[1].Fallback {
		t.Fatalf("%v: fallback %v %v", err, ps[0].Fallback, ps[1].Fallback)
	}
	// A third plain repeat is still refused, against the first.
	if _, err := Parse([]byte(two+"    fallback: true\n  - name: HTTP\n    target: h:1\n"), "d.yaml"); err == nil || !strings.Contains(err.Error(), "protocols[2] (HTTP): same protocol and conditions as protocols[0]") {
		t.Fatalf("a third repeat: %v", err)
	}
}
