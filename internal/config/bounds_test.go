package config

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestConfigWithoutProtocolsRejected: an empty (or truncated) file, or one
// listing no protocols, would refuse every connection; it is an error with
// file:line.
func TestConfigWithoutProtocolsRejected(t *testing.T) {
	for _, c := range []struct{ name, yaml, want string }{
		{"empty file", "", "c.yaml:1: no protocols"},
		{"only a comment", "# editing\n", "c.yaml:1: no protocols"},
		{"empty list", "server:\n  listen: \"127.0.0.1:0\"\nprotocols: []\n", "c.yaml:3: no protocols"},
		{"no protocols key", "server:\n  listen: \"127.0.0.1:0\"\n", "c.yaml:1: no protocols"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml), "c.yaml")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want error containing %q, got %v", c.want, err)
			}
		})
	}
	c := Default()
	c.Protocols = nil
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "no protocols") {
		t.Fatalf("Validate of a Go-built config without protocols: %v", err)
	}
}

// TestHugeValuesRejected feeds an out-of-range value to every numeric key of
// the file: each is a clean error naming file:line and the key, never a
// crash or an allocation of that size.
func TestHugeValuesRejected(t *testing.T) {
	const proto = "protocols:\n  - name: SSH\n    target: \"127.0.0.1:22\"\n"
	server := func(kv string) string { return "server:\n  listen: \"127.0.0.1:0\"\n  " + kv + "\n" + proto }
	security := func(kv string) string {
		return "security:\n  enable_rate_limit: true\n  " + kv + "\n" + proto
	}
	route := func(kv string) string {
		return "protocols:\n  - name: SSH\n    " + kv + "\n    target: \"127.0.0.1:22\"\n"
	}
	nested := func(block, kv string) string {
		return "protocols:\n  - name: SSH\n    " + block + ":\n      " + kv + "\n    target: \"127.0.0.1:22\"\n"
	}
	dist := func(kv string) string { return "distributed:\n  node_id: n\n  " + kv + "\n" + proto }
	distNested := func(block, kv string) string { return "distributed:\n  " + block + ":\n    " + kv + "\n" + proto }
	const huge, hugeDur = "2000000000", "\"2000000h\""
	cases := []struct{ key, yaml string }{
		{"max_connections", server("max_connections: " + huge)},
		{"buffer_size", server("buffer_size: " + huge)},
		{"buffer_size", server("buffer_size: 16")},
		{"identify_min_bytes", server("identify_min_bytes: " + huge)},
		{"identify_timeout", server("identify_timeout: " + hugeDur)},
		{"identify_read_timeout", server("identify_read_timeout: " + hugeDur)},
		{"cache_ttl", server("cache_ttl: " + hugeDur)},
		{"dial_timeout", server("dial_timeout: " + hugeDur)},
		{"server_first_wait", server("server_first_wait: " + hugeDur)},
		{"idle_timeout", server("idle_timeout: " + hugeDur)},
		{"tcp_keepalive", server("tcp_keepalive: " + hugeDur)},
		{"graceful_shutdown_timeout", server("graceful_shutdown_timeout: " + hugeDur)},
		{"max_connections", server("max_connections: -5")},
		{"max_udp_flows", server("max_udp_flows: " + huge)},
		{"max_udp_flows_per_source", server("max_udp_flows_per_source: " + huge)},
		{"udp_idle_timeout", server("udp_idle_timeout: " + hugeDur)},
		{"event_loops", server("event_loops: " + huge)},
		{"udp_idle_timeout", route("udp_idle_timeout: " + hugeDur)},
		{"udp_responses", route("udp_responses: " + huge)},
		{"requests_per_second", security("rate_limit: {requests_per_second: 1e300, burst_size: 1}")},
		{"requests_per_second", security("rate_limit: {requests_per_second: .nan, burst_size: 1}")},
		{"burst_size", security("rate_limit: {requests_per_second: 10, burst_size: 3000000000}")},
		{"max_connections_per_ip", security("max_connections_per_ip: " + huge)},
		{"failure_threshold", security("ddos_guard: {failure_threshold: " + huge + "}")},
		{"window", security("ddos_guard: {window: " + hugeDur + "}")},
		{"ban_duration", security("ddos_guard: {ban_duration: " + hugeDur + "}")},
		{"max_ban_duration", security("ddos_guard: {max_ban_duration: " + hugeDur + "}")},
		{"priority", route("priority: " + huge)},
		{"idle_timeout", route("idle_timeout: " + hugeDur)},
		{"pool.min_idle", nested("pool", "min_idle: "+huge)},
		{"pool.max_idle_time", nested("pool", "max_idle_time: "+hugeDur)},
		{"health_check.interval", nested("health_check", "interval: "+hugeDur)},
		{"health_check.interval", nested("health_check", "interval: \"1ns\"")},
		{"health_check.timeout", nested("health_check", "timeout: "+hugeDur)},
		{"health_check.rise", nested("health_check", "rise: "+huge)},
		{"health_check.fall", nested("health_check", "fall: "+huge)},
		{"health_check.path", nested("health_check", "path: \"/x\\r\\nHost: evil\"")},
		{"health_check.check", nested("health_check", "check: gopher")},
		{"metrics_port", "monitoring:\n  enable_metrics: true\n  metrics_port: " + huge + "\n" + proto},
		{"health_check_port", "monitoring:\n  enable_health_check: true\n  health_check_port: -1\n" + proto},
		{"admin_token_file", "monitoring:\n  metrics_port: 9091\n  admin: true\n  admin_token_file: \"/" + strings.Repeat("x", 5000) + "\"\n" + proto},
		{"lease_ttl", dist("lease_ttl: " + hugeDur)},
		{"start_timeout", dist("start_timeout: " + hugeDur)},
		{"max_staleness", dist("max_staleness: " + hugeDur)},
		{"state_file", dist("state_file: \"/var/lib/x\\u0000y\"")},
		{"refresh_interval", distNested("service_discovery", "refresh_interval: "+huge)},
		{"health_check_interval", distNested("load_balancer", "health_check_interval: "+huge)},
		{"strategy", distNested("load_balancer", "strategy: fastest")},
	}
	for _, c := range cases {
		t.Run(c.key, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml), "big.yaml")
			if err == nil {
				t.Fatalf("accepted:\n%s", c.yaml)
			}
			// The line of the key's last component.
			last := regexp.MustCompile(`[\s{]` + c.key[strings.LastIndex(c.key, ".")+1:] + ":")
			line := fmt.Sprintf("big.yaml:%d: ", strings.Count(c.yaml[:last.FindStringIndex(c.yaml)[0]], "\n")+1)
			if !strings.Contains(err.Error(), line) || !strings.Contains(err.Error(), c.key) {
				t.Fatalf("error does not name %s and %s: %v", line, c.key, err)
			}
		})
	}
	// Values too large for the Go type are decode errors, with file:line too.
	if _, err := Parse([]byte(server("max_connections: 99999999999999999999")), "big.yaml"); err == nil || !strings.Contains(err.Error(), "big.yaml:3: ") {
		t.Fatalf("overflowing int: %v", err)
	}
}

// TestCountsAndLengthsBounded: lists and strings that would cost memory or
// CPU per connection are bounded too.
func TestCountsAndLengthsBounded(t *testing.T) {
	many := func(n int, f func(i int) string) string {
		var b strings.Builder
		for i := range n {
			b.WriteString(f(i))
		}
		return b.String()
	}
	cases := []struct{ name, yaml, want string }{
		{"protocols", "protocols:\n" + many(1025, func(i int) string {
			return fmt.Sprintf("  - name: HTTP\n    host: [\"h%d\"]\n    target: \"127.0.0.1:80\"\n", i)
		}), "at most 1024"},
		{"targets", "protocols:\n  - name: SSH\n    target: \"" + strings.Repeat("127.0.0.1:22,", 1025) + "\"\n", "at most 1024"},
		{"name", "protocols:\n  - name: " + strings.Repeat("x", 65) + "\n    match_start_bytes: [\"aa\"]\n    target: \"127.0.0.1:1\"\n", "name: at most 64"},
		{"regex", "protocols:\n  - name: Mine\n    match_regexes: [\"" + strings.Repeat("a", 5000) + "\"]\n    target: \"127.0.0.1:1\"\n", "at most 4096"},
		{"sni", "protocols:\n  - name: TLS\n    sni: [\"" + strings.Repeat("a", 300) + "\"]\n    target: \"127.0.0.1:1\"\n", "sni"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml), "n.yaml")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want %q, got %v", c.want, err)
			}
		})
	}
}

// TestAddressesValidated: ports out of range and hosts that are neither an IP
// nor a name fail -check instead of at bind or dial time.
func TestAddressesValidated(t *testing.T) {
	const proto = "protocols:\n  - name: SSH\n    target: \"127.0.0.1:22\"\n"
	cases := []struct{ name, yaml, want string }{
		{"listen port", "server:\n  listen: \"127.0.0.1:99999\"\n" + proto, "a.yaml:2: server.listen[0]: \"127.0.0.1:99999\": port"},
		{"listen named port", "server:\n  listen: \":http\"\n" + proto, "a.yaml:2: server.listen[0]"},
		{"listen host", "server:\n  listen: \"no such host!:80\"\n" + proto, "a.yaml:2: server.listen[0]"},
		{"listen twice", "server:\n  listen: [\"127.0.0.1:0\", \"127.0.0.1:0\"]\n" + proto, "a.yaml:2: server.listen[1]: \"127.0.0.1:0\" is listed twice"},
		{"listen in list", "server:\n  listen: [\"127.0.0.1:0\", \"127.0.0.1:-1\"]\n" + proto, "server.listen[1]"},
		{"target host", "protocols:\n  - name: SSH\n    target: \"bad host:22\"\n", "a.yaml:3: protocols[0] (SSH): target \"bad host:22\": host"},
		{"bind address", "monitoring:\n  bind_address: \"all interfaces\"\n" + proto, "a.yaml:2: monitoring.bind_address"},
		{"log level", "server:\n  log_level: loud\n" + proto, "a.yaml:2: server.log_level"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml), "a.yaml")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want %q, got %v", c.want, err)
			}
		})
	}
	for _, ok := range []string{"127.0.0.1:0", ":9090", "[::1]:8080", "localhost:80", "0.0.0.0:443"} {
		if _, err := Parse([]byte("server:\n  listen: \""+ok+"\"\n"+proto), "a.yaml"); err != nil {
			t.Errorf("listen %q refused: %v", ok, err)
		}
	}
	for _, ok := range []string{"web-server:80", "redis_cluster:6379", "[::1]:22", "10.0.0.1:1;w=3", "a.example.com.:443"} {
		if _, err := Parse([]byte("protocols:\n  - name: SSH\n    target: \""+ok+"\"\n"), "a.yaml"); err != nil {
			t.Errorf("target %q refused: %v", ok, err)
		}
	}
	c, err := Parse([]byte(proto), "a.yaml")
	if err != nil || c.Monitoring.BindAddress != "127.0.0.1" {
		t.Fatalf("monitoring.bind_address default: %v %q", err, c.Monitoring.BindAddress)
	}
}

// TestConfigFileSizeLimit: a file over 4 MiB is refused before parsing,
// both at load and on reload; the error names the file and the limit.
func TestConfigFileSizeLimit(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "huge.yaml")
	valid := "protocols:\n  - name: SSH\n    target: \"127.0.0.1:22\"\n"
	pad := strings.Repeat("#"+strings.Repeat("x", 1022)+"\n", 4<<10) // exactly 4 MiB of comments
	if err := os.WriteFile(path, []byte(valid+pad[:len(pad)-len(valid)]), 0o644); err != nil {
		t.Fatal(err)
	}
	cm, err := Watch(path)
	if err != nil {
		t.Fatalf("a file of exactly 4 MiB: %v", err)
	}
	defer cm.Close()
	if err := os.WriteFile(path, []byte(valid+pad), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{checkFile(path), cm.Reload()} {
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "4 MiB") {
			t.Fatalf("want an error naming %s and 4 MiB, got %v", path, err)
		}
	}
	if _, err := Parse([]byte(valid+pad), "etcd:/protoplex/config"); err == nil || !strings.Contains(err.Error(), "etcd:/protoplex/config: larger than") {
		t.Fatalf("ParseConfig of 4 MiB + 1: %v", err)
	}
}
