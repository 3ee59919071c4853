package config

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

const ssh = "protocols:\n  - name: SSH\n    target: \"h:22\"\n"

// TestCheckFriction: each value that would fail or misbehave once running
// is an error of -check, with file:line and what to write instead.
func TestCheckFriction(t *testing.T) {
	for _, c := range []struct{ name, yaml, want string }{
		{"unknown health check", "protocols:\n  - name: SSH\n    target: \"h:22\"\n    health_check: {interval: 5s, check: tcpp}\n",
			`c.yaml:4: protocols[0] (SSH): health_check.check "tcpp": want tcp, redis, http or dns`},
		{"listen port over 65535", "server:\n  listen: 127.0.0.1:99999\n" + ssh,
			`c.yaml:2: server.listen[0]: "127.0.0.1:99999": port "99999" is not a number in 0..65535`},
		{"unknown log level", "server:\n  log_level: verbose\n" + ssh,
			`c.yaml:2: server.log_level: "verbose": want debug, info, warn or error`},
		{"negative pool", "protocols:\n  - name: SSH\n    target: \"h:22\"\n    pool: {min_idle: -1}\n",
			"c.yaml:4: protocols[0] (SSH): pool.min_idle: -1 is outside [0, 1000]"},
		{"sni regex", "protocols:\n  - name: TLS\n    target: \"h:443\"\n    sni: ['^api\\..*$']\n",
			`c.yaml:4: protocols[0] (TLS): sni "^api\\..*$" looks like a regular expression or a glob: only exact names and a leading "*." wildcard`},
		{"sni inner star", "protocols:\n  - name: TLS\n    target: \"h:443\"\n    sni:\n      - a.com\n      - api.*.com\n",
			`c.yaml:6: protocols[0] (TLS): sni "api.*.com" looks like a regular expression or a glob`},
		{"sni class", "protocols:\n  - name: TLS\n    target: \"h:443\"\n    sni: '[a-z]+.example'\n",
			`c.yaml:4: protocols[0] (TLS): sni "[a-z]+.example" looks like a regular expression`},
		{"host leading dot", "protocols:\n  - name: HTTP\n    target: \"h:80\"\n    host: .example.com\n",
			`c.yaml:4: protocols[0] (HTTP): host ".example.com": a leading dot is not supported; write "*.example.com"`},
		{"lone star", "protocols:\n  - name: HTTP\n    target: \"h:80\"\n    host: '*'\n",
			`host "*": to match every name, leave the condition out`},
		{"host not a name", "protocols:\n  - name: HTTP\n    target: \"h:80\"\n    host: 'a b'\n",
			`c.yaml:4: protocols[0] (HTTP): host "a b" is not a host name`},
		{"second UDP fallback", "server:\n  listen_udp: \":1\"\nprotocols:\n  - {name: DNS, target: \"h:53\", fallback: true}\n  - {name: QUIC, target: \"h:443\", fallback: true}\n",
			`c.yaml:5: protocols[1] (QUIC): a second fallback; only one protocol may be the fallback`},
		{"sni twice", "protocols:\n  - name: TLS\n    target: \"h:443\"\n    sni:\n      - a.example\n      - A.example.\n",
			`c.yaml:6: protocols[0] (TLS): sni "A.example." is listed twice (first at sni[0])`},
		{"unknown key", "server:\n  listen: \":1\"\n  max_conections: 5\n" + ssh,
			`c.yaml:3: server: unknown key "max_conections" (did you mean "max_connections"?)`},
		{"unknown section", "servre:\n  listen: \":1\"\n" + ssh,
			`c.yaml:1: unknown section "servre" (did you mean "server"?)`},
		{"admin token file relative", "monitoring:\n  metrics_port: 9091\n  admin: true\n  admin_token_file: token.txt\n" + ssh,
			`c.yaml:4: monitoring.admin_token_file: "token.txt": an absolute path of at most 1024 printable characters`},
		{"admin token file without admin", "monitoring:\n  metrics_port: 9091\n  admin_token_file: /etc/protoplex/token\n" + ssh,
			`c.yaml:3: monitoring.admin_token_file: set while monitoring.admin is false: write admin: true to enable the actions, or remove the file name`},
		{"admin without the metrics port", "monitoring:\n  admin: true\n" + ssh,
			`c.yaml:2: monitoring.admin: true, but monitoring.metrics_port is 0: the actions are served on the metrics port`},
		{"key in the wrong section", "monitoring:\n  log_level: info\n" + ssh,
			`c.yaml:2: monitoring: unknown key "log_level": it belongs under server`},
		{"unknown key far from any", "protocols:\n  - name: SSH\n    target: \"h:22\"\n    pool: {zzzz: 1}\n",
			`c.yaml:4: protocols[0] (SSH): pool: unknown key "zzzz"; known: max_idle_time, min_idle`},
		{"key twice", "server:\n  listen: \":1\"\n  listen: \":2\"\n" + ssh,
			`c.yaml:3: server: key "listen" is given twice (first on line 2)`},
		{"duration as a number", "server:\n  identify_timeout: 5\n" + ssh,
			`c.yaml:2: server.identify_timeout: want a duration such as "5s", got 5`},
		{"duration misspelt", "server:\n  identify_timeout: 5x\n" + ssh,
			`c.yaml:2: server.identify_timeout: want a duration such as "5s", got "5x"`},
		{"number as a word", "server:\n  max_connections: many\n" + ssh,
			`c.yaml:2: server.max_connections: want a number, got "many"`},
		{"number with a fraction", "server:\n  buffer_size: 1.5\n" + ssh,
			"c.yaml:2: server.buffer_size: want a whole number, got 1.5"},
		{"number too large", "server:\n  buffer_size: 9223372036854775808\n" + ssh,
			"c.yaml:2: server.buffer_size: want a number from -9223372036854775808 to 9223372036854775807, got 9223372036854775808"},
		{"float as a word", "security:\n  rate_limit: {requests_per_second: fast}\n" + ssh,
			`c.yaml:2: security.rate_limit.requests_per_second: want a number, got "fast"`},
		{"bool as a word", "server:\n  accept_proxy: maybe\n" + ssh,
			`c.yaml:2: server.accept_proxy: want true or false, got "maybe"`},
		{"list as a string", "server:\n  trusted_proxies: 10.0.0.1\n" + ssh,
			`c.yaml:2: server.trusted_proxies: want a list, got "10.0.0.1"`},
		{"string as a list", "protocols:\n  - name: SSH\n    target: \"h:22\"\n    balance: [first]\n",
			"c.yaml:4: protocols[0] (SSH): balance: want a string, got a list"},
		{"target as a mapping", "protocols:\n  - name: SSH\n    target: {h: 22}\n",
			"c.yaml:3: protocols[0] (SSH): target: want a string or a list of strings, got a mapping"},
		{"section as a scalar", "server: 5\n" + ssh,
			"c.yaml:1: server: want a mapping (key: value lines), got 5"},
		{"file as a list", "- a\n", "c.yaml:1: want a mapping (key: value lines), got a list"},
		{"protocols as a string", "protocols: SSH\n", `c.yaml:1: protocols: want a list, got "SSH"`},
		{"misspelt protocol", "protocols:\n  - name: TSL\n    target: \"h:443\"\n",
			`c.yaml:2: protocols[0] (TSL): "TSL" is not a built-in protocol (did you mean "tls"?)`},
		{"on_timeout names nothing", "server:\n  on_timeout: shh\n" + ssh,
			`c.yaml:2: server.on_timeout: "shh" names no protocols: entry (did you mean "ssh"?)`},
		{"two chosen on silence", "server:\n  on_timeout: SSH\n" + ssh + "  - name: Mine\n    target: h:1\n    match_start_bytes: [aa]\n    server_first: true\n",
			"c.yaml:9: protocols[1] (Mine): chosen on client silence (server_first: true), as protocols[0] (SSH) is already: only one protocol"},
		{"server_first beside FTP", ssh + "    server_first: true\n  - name: FTP\n    target: h:21\n",
			"c.yaml:5: protocols[1] (FTP): chosen on client silence (FTP speaks first), as protocols[0] (SSH) is already"},
		{"server_first on a conditional route", "protocols:\n  - name: TLS\n    target: h:1\n    sni: a.com\n    server_first: true\n",
			"c.yaml:5: protocols[0] (TLS): chosen on client silence (server_first: true) but routed by sni: a silent client sends none"},
		{"silence longer than identification", "server:\n  server_first_wait: 20s\n" + ssh + "    server_first: true\n",
			"c.yaml:2: server.server_first_wait: 20s is not shorter than identify_timeout (15s): protocols[0] (SSH), chosen on client silence, would never be"},
		{"anyprot beside a fallback", ssh + "    fallback: true\n  - name: anyprot\n    target: h:443\n",
			"c.yaml:5: protocols[1] (anyprot): a second fallback (anyprot is the fallback by nature); only one protocol may be the fallback"},
		{"anyprot with a condition", "protocols:\n  - name: anyprot\n    target: h:1\n    sni: a.com\n",
			"c.yaml:4: protocols[0] (anyprot): sni applies only to DTLS, QUIC, TLS"},
		{"two timeouts", "protocols:\n  - name: timeout\n    target: h:1\n  - name: timeout\n    target: h:2\n",
			"c.yaml:4: protocols[1] (timeout): chosen on client silence (timeout speaks first), as protocols[0] (timeout) is already"},
		{"fallback on a conditional route", "protocols:\n  - name: TLS\n    target: h:1\n    sni: a.com\n    fallback: true\n",
			"c.yaml:5: protocols[0] (TLS): fallback: the fallback takes every connection nothing matched, whatever its sni"},
		{"trusted proxies alone", "server:\n  trusted_proxies: [10.0.0.1]\n" + ssh,
			"c.yaml:2: server.trusted_proxies: has no effect without accept_proxy: true"},
		{"accept proxy alone", "server:\n  accept_proxy: true\n" + ssh,
			"c.yaml:2: server.accept_proxy: true with no trusted_proxies"},
		{"health check without interval", "protocols:\n  - name: SSH\n    target: h:1\n    health_check: {check: redis}\n",
			"c.yaml:4: protocols[0] (SSH): health_check: check set but no interval: no active check runs"},
		{"health path without http", "protocols:\n  - name: SSH\n    target: h:1\n    health_check:\n      interval: 5s\n      path: /x\n",
			`c.yaml:6: protocols[0] (SSH): health_check.path: applies only to check: http (check is "tcp")`},
		{"pool idle time without pool", "protocols:\n  - name: SSH\n    target: h:1\n    pool: {max_idle_time: 5s}\n",
			"c.yaml:4: protocols[0] (SSH): pool.max_idle_time: has no effect without pool.min_idle"},
		{"metrics and health on one port", "monitoring:\n  metrics_port: 9091\n  health_check_port: 9091\n" + ssh,
			"c.yaml:3: monitoring.health_check_port: port 9091 is also monitoring.metrics_port's (127.0.0.1:9091): the second bind would fail"},
		{"listen on the metrics port", "server:\n  listen: \":9091\"\nmonitoring:\n  metrics_port: 9091\n" + ssh,
			`c.yaml:2: server.listen[0]: port 9091 is also monitoring.metrics_port's (127.0.0.1:9091)`},
		{"rate limit off", "security:\n  rate_limit: {requests_per_second: 10, burst_size: 5}\n" + ssh,
			"c.yaml:2: security.rate_limit: set, but enable_rate_limit is not true: no rate limit applies"},
		{"ddos guard off", "security:\n  ddos_guard:\n    failure_threshold: 5\n" + ssh,
			"c.yaml:3: security.ddos_guard: set, but enable_ddos_guard is not true"},
		{"discovery without the cluster", "distributed:\n  service_discovery:\n    enable: true\n" + ssh,
			"c.yaml:3: distributed.service_discovery.enable: has no effect without distributed.enable: true"},
		{"empty target without discovery", "protocols:\n  - name: SSH\n    target: []\n",
			"c.yaml:3: protocols[0] (SSH): target: [] (targets from etcd only) needs distributed.enable and distributed.service_discovery.enable: true"},
		{"config manager without the cluster", "distributed:\n  config_manager: {enable: true}\n" + ssh,
			"c.yaml:2: distributed.config_manager.enable: has no effect without distributed.enable: true"},
		{"etcd endpoint without a port", "distributed:\n  etcd_endpoints: [etcd1]\n" + ssh,
			`c.yaml:2: distributed.etcd_endpoints[0]: "etcd1": want host:port`},
		{"etcd endpoint of another scheme", "distributed:\n  etcd_endpoints: [\"ftp://etcd1:2379\"]\n" + ssh,
			`c.yaml:2: distributed.etcd_endpoints[0]: "ftp://etcd1:2379": want host:port, http(s)://host:port or unix://path`},
		{"conditions on a user protocol named as a built-in", "protocols:\n  - name: TLS\n    target: h:1\n    match_start_bytes: [\"16\"]\n    sni: a.com\n",
			"c.yaml:5: protocols[0] (TLS): sni applies only to DTLS, QUIC, TLS (the built-in ones: with match_start_bytes or match_regexes this entry is a user protocol)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml), "c.yaml")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want an error containing\n\t%s\ngot\n\t%v", c.want, err)
			}
		})
	}
}

// TestCheckAccepts: what the checks above must not refuse.
func TestCheckAccepts(t *testing.T) {
	for _, y := range []string{
		"protocols:\n  - name: TLS\n    target: h:1\n    sni: ['*.example.com', API.Example.com., xn--bcher-kva.example]\n",
		"protocols:\n  - name: HTTP\n    target: h:1\n    host: ['[::1]', 127.0.0.1, '*.example.com']\n",
		"server:\n  listen: [\"127.0.0.1:9091\"]\nmonitoring:\n  bind_address: 127.0.0.2\n  metrics_port: 9091\n" + ssh,
		"server:\n  listen: \":0\"\nmonitoring:\n  metrics_port: 9091\n  health_check_port: 9092\n" + ssh,
		"server:\n  accept_proxy: true\n  trusted_proxies: [10.0.0.0/8]\n" + ssh,
		"protocols:\n  - name: FTP\n    target: h:21\n    server_first: true\n",
		"server:\n  on_timeout: postgresql\nprotocols:\n  - name: postgres\n    target: h:5432\n",
		"distributed:\n  enable: true\n  load_balancer: {health_check_interval: 10}\n" + ssh + "    health_check: {check: redis}\n",
		"server:\n  listen:\n" + ssh,
		"distributed:\n  etcd_endpoints: [\"etcd1:2379\", \"http://[::1]:2379\", \"https://e.example:2379/\", \"unix:///run/etcd.sock\"]\n" + ssh,
		"security:\n  enable_rate_limit: true\n  rate_limit: {requests_per_second: 10}\n  enable_ddos_guard: true\n  ddos_guard: {window: 5s}\n" + ssh,
	} {
		if _, err := Parse([]byte(y), "c.yaml"); err != nil {
			t.Errorf("%s: %v", y, err)
		}
	}
}

// TestTypeErrorsDoNotHideOthers: a wrong type, an unknown key and bad
// values are reported together, in file order, and the values that
// decoded are still checked.
func TestTypeErrorsDoNotHideOthers(t *testing.T) {
	y := "server:\n  identify_timeout: 5\n  log_level: verbose\n  max_conections: 5\nprotocols:\n  - name: SSH\n    target: \"h:99999\"\n    priority: high\n  - name: TSL\n    target: h:1\n"
	_, err := Parse([]byte(y), "c.yaml")
	if err == nil {
		t.Fatal("accepted")
	}
	want := []string{
		`c.yaml:2: server.identify_timeout: want a duration such as "5s", got 5`,
		`c.yaml:3: server.log_level: "verbose"`,
		`c.yaml:4: server: unknown key "max_conections"`,
		`c.yaml:7: protocols[0] (SSH): target "h:99999"`,
		`c.yaml:8: protocols[0] (SSH): priority: want a number, got "high"`,
		`c.yaml:9: protocols[1] (TSL): "TSL" is not a built-in protocol`,
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("want %d errors, got:\n%v", len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("error %d: want %q..., got %q", i, w, lines[i])
		}
	}
}

// TestConditionsTakeOneString: sni, alpn and host are one string or a list.
func TestConditionsTakeOneString(t *testing.T) {
	c, err := Parse([]byte("protocols:\n  - name: TLS\n    target: h:1\n    sni: api.example.com\n    alpn: h2\n  - name: HTTP\n    target: h:2\n    host: [a.example.com, b.example.com]\n"), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ps, err := c.BuildProtocols()
	if err != nil {
		t.Fatal(err)
	}
	if got := ps[0]; len(got.SNI) != 1 || got.SNI[0] != "api.example.com" || len(got.ALPN) != 1 || got.ALPN[0] != "h2" {
		t.Fatalf("sni %q alpn %q", got.SNI, got.ALPN)
	}
	if got := ps[1].Hosts; len(got) != 2 || got[1] != "b.example.com" {
		t.Fatalf("host %q", got)
	}
}

// TestServerFirstOnAnyProtocol: server_first: true, or server.on_timeout
// naming the entry, makes that protocol the one chosen on silence, built
// in or not; the others stay client-first.
func TestServerFirstOnAnyProtocol(t *testing.T) {
	for _, c := range []struct {
		name, yaml string
		silent     int // index of the entry chosen on silence, -1 none
	}{
		{"server_first on a built-in", "protocols:\n  - name: HTTP\n    target: h:1\n  - name: SSH\n    target: h:2\n    server_first: true\n", 1},
		{"on_timeout", "server:\n  on_timeout: ssh\nprotocols:\n  - name: HTTP\n    target: h:1\n  - name: SSH\n    target: h:2\n", 1},
		{"on_timeout skips conditional entries", "server:\n  on_timeout: tls\nprotocols:\n  - name: TLS\n    target: h:1\n    sni: a.com\n  - name: TLS\n    target: h:2\n", 1},
		{"server_first on a user protocol", "protocols:\n  - name: Mine\n    target: h:1\n    match_start_bytes: [aa]\n    server_first: true\n", 0},
		{"FTP by nature", "protocols:\n  - name: SSH\n    target: h:2\n  - name: FTP\n    target: h:1\n", 1},
		{"none", "protocols:\n  - name: SSH\n    target: h:2\n", -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse([]byte(c.yaml), "c.yaml")
			if err != nil {
				t.Fatal(err)
			}
			ps, err := cfg.BuildProtocols()
			if err != nil {
				t.Fatal(err)
			}
			for i, p := range ps {
				if p.ServerFirst() != (i == c.silent) {
					t.Errorf("protocols[%d] (%s): server-first %v", i, p.Name, p.ServerFirst())
				}
				if spec := p.Spec(); spec.ServerFirst && (spec.Detect == nil || spec.Silence != 0) {
					t.Errorf("protocols[%d]: spec %+v", i, spec)
				}
			}
		})
	}
	if _, err := Parse([]byte("server:\n  server_first_wait: 100ms\n  identify_timeout: 1s\n"+ssh+"    server_first: true\n"), "c.yaml"); err != nil {
		t.Fatal(err)
	}
}

// TestMergeKeys: "<<: *anchor" merges a mapping, the keys beside it win;
// top-level keys starting with "x-" hold anchors and are otherwise ignored.
func TestMergeKeys(t *testing.T) {
	c, err := Parse([]byte("x-checks:\n  tcp: &t {interval: 1s}\nprotocols:\n  - name: HTTP\n    target: h:3\n    health_check: *t\n  - name: SSH\n    target: h:1\n    health_check: &d {interval: 5s, check: tcp}\n  - name: Redis\n    target: h:2\n    health_check:\n      <<: *d\n      check: redis\n"), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if h := c.Protocols[0].HealthCheck; h.Interval != time.Second {
		t.Fatalf("%+v", h)
	}
	c, err = Parse([]byte("protocols:\n  - name: SSH\n    target: h:1\n    health_check: &d {interval: 5s, check: tcp}\n  - name: Redis\n    target: h:2\n    health_check:\n      <<: *d\n      check: redis\n"), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if h := c.Protocols[1].HealthCheck; h.Interval != 5*time.Second || h.Check != "redis" || c.Protocols[0].HealthCheck.Check != "tcp" {
		t.Fatalf("%+v", h)
	}
}

// TestAliasesBounded: nested aliases that would expand a small file into
// billions of nodes, and an alias inside the node it names, are refused
// before the file is decoded.
func TestAliasesBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("x-0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i < 9; i++ {
		fmt.Fprintf(&b, "x-%d: &a%d [%s]\n", i, i, strings.Repeat(fmt.Sprintf("*a%d, ", i-1), 9)+fmt.Sprintf("*a%d", i-1))
	}
	b.WriteString("protocols:\n  - name: SSH\n    target: *a8\n")
	for _, c := range []struct{ yaml, want string }{
		{b.String(), "c.yaml:1: aliases expand the document by more than 1000000 nodes"},
		{"server: &s\n  listen: *s\n", "c.yaml:2: alias *s is part of the node it names"},
	} {
		_, err := Parse([]byte(c.yaml), "c.yaml")
		if err == nil || !strings.HasPrefix(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("want the one error %q..., got %v", c.want, err)
		}
	}
}

// TestEnvEndpointsTrimmed: ETCD_ENDPOINTS may have spaces after its commas.
func TestEnvEndpointsTrimmed(t *testing.T) {
	c, err := Parse([]byte(ssh), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"ETCD_ENDPOINTS": "etcd1:2379, etcd2:2379"}
	if err := c.ApplyEnv(func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if got := c.Distributed.EtcdEndpoints; len(got) != 2 || got[1] != "etcd2:2379" {
		t.Fatalf("%q", got)
	}
}

// TestDiscoveryOnlyProtocol: target: [] is accepted when etcd discovery
// supplies the targets, by -check (the file, with its YAML) and at start
// (the decoded Config, validated again without it).
func TestDiscoveryOnlyProtocol(t *testing.T) {
	c, err := Parse([]byte("distributed:\n  enable: true\n  etcd_endpoints: [\"127.0.0.1:2379\"]\n  service_discovery: {enable: true}\nprotocols:\n  - name: SSH\n    target: []\n"), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("the decoded config is refused at start: %v", err)
	}
	c.Distributed.ServiceDiscovery.Enable = false
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "target is required") {
		t.Fatalf("no target and no discovery: %v", err)
	}
}
