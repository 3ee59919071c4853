package protoplex

import (
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// Tests of the root's side of the configuration model: the Go options and
// UpdateConfig/CheckConfig meet the bounds internal/config checks in files.

// TestOptionBounds: the Go options enforce the bounds of the file.
func TestOptionBounds(t *testing.T) {
	for name, opt := range map[string]Option{
		"MaxConnections":          WithMaxConnections(2_000_000_000),
		"BufferSize":              WithBufferSize(1 << 30),
		"BufferSize small":        WithBufferSize(16),
		"IdentifyTimeout":         WithIdentifyTimeout(2000000 * time.Hour),
		"IdentifyReadTimeout":     WithIdentifyReadTimeout(2000000 * time.Hour),
		"CacheTTL":                WithCacheTTL(2000000 * time.Hour),
		"DialTimeout":             WithDialTimeout(2000000 * time.Hour),
		"GracefulShutdownTimeout": WithGracefulShutdownTimeout(2000000 * time.Hour),
		"ServerFirstWait":         WithServerFirstWait(2000000 * time.Hour),
		"IdleTimeout":             WithIdleTimeout(2000000 * time.Hour),
		"TCPKeepAlive":            WithTCPKeepAlive(10 * time.Hour),
		"IdleTimeout negative":    WithIdleTimeout(-time.Second),
	} {
		pm := NewProtocolManager(opt, WithLogger(discardLogger()))
		err := pm.Err()
		pm.Close()
		if err == nil || !strings.Contains(err.Error(), strings.Fields(name)[0]) {
			t.Errorf("%s: want an error naming it, got %v", name, err)
		}
	}
}

// TestConfigTotalsBoundedInGo: a Config built in Go meets the same totals
// in CheckConfig and UpdateConfig.
func TestConfigTotalsBoundedInGo(t *testing.T) {
	pm := NewProtocolManager(WithLogger(discardLogger()))
	defer pm.Close()
	c := DefaultConfig()
	c.Protocols[0].Target = StringList{"127.0.0.2:1", "127.0.0.2:2"}
	c.Protocols[0].Pool.MinIdle = 1000
	for name, check := range map[string]func(*Config) error{"CheckConfig": pm.CheckConfig, "UpdateConfig": pm.UpdateConfig} {
		if err := check(c); err == nil || !strings.Contains(err.Error(), "keep 2000 warm connections") {
			t.Fatalf("%s: %v", name, err)
		}
	}

}

// TestSourceKey: protocols[].source, one address, a range or a list, reaches
// the protocol; a bad one is an error with file:line; a real connection
// through a route with a source is dialed from it.
func TestSourceKey(t *testing.T) {
	c, err := ParseConfig([]byte("protocols:\n  - name: SSH\n    target: \"127.0.0.1:22\"\n    source: \"127.0.0.2-127.0.0.20\"\n  - name: HTTP\n    target: \"127.0.0.1:80\"\n    source: [\"127.0.0.1\", \"127.0.0.3\"]\n"), "s.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ps, err := c.BuildProtocols()
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ps[0].Source) != "[127.0.0.2-127.0.0.20]" || fmt.Sprint(ps[1].Source) != "[127.0.0.1 127.0.0.3]" {
		t.Fatalf("sources: %v %v", ps[0].Source, ps[1].Source)
	}
	for _, bad := range []string{"\"nope\"", "\"127.0.0.9-127.0.0.2\"", "[\"127.0.0.1\", \"::1\"]", "\"10.0.0.0-10.255.255.255\""} {
		_, err := ParseConfig([]byte("protocols:\n  - name: SSH\n    target: \"127.0.0.1:22\"\n    source: "+bad+"\n"), "s.yaml")
		if err == nil || !strings.Contains(err.Error(), "s.yaml:4: protocols[0] (SSH): source") {
			t.Errorf("source %s: %v", bad, err)
		}
	}

	seen := make(chan string, 1)
	backend := testnet.Serve(t, func(c net.Conn) {
		seen <- c.RemoteAddr().(*net.TCPAddr).IP.String()
		io.Copy(c, c)
	})
	cfg, err := ParseConfig([]byte(fmt.Sprintf("protocols:\n  - name: SSH\n    target: %q\n    source: \"127.0.0.1\"\n", backend)), "s.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pm := NewProtocolManager(WithLogger(discardLogger()))
	if err := pm.UpdateConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if got := roundTrip(t, serveTest(t, pm), "SSH-2.0-src\r\n"); got != "SSH-2.0-src\r\n" {
		t.Fatalf("through a sourced route: %q", got)
	}
	if ip := <-seen; ip != "127.0.0.1" {
		t.Fatalf("dialed from %s", ip)
	}
}

func writeConfig(t *testing.T, path, target string) {
	t.Helper()
	testnet.WriteFile(t, path, "protocols:\n  - name: SSH\n    target: \""+target+"\"\n")
}

// watchedConfig writes a one-protocol config forwarding to target and
// watches it with a ConfigManager that the test's end closes.
func watchedConfig(t *testing.T, target string) (path string, cm *ConfigManager) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "c.yaml")
	writeConfig(t, path, target)
	cm, err := NewConfigManager(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cm.Close() })
	return path, cm
}
