package main

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/darkit/protoplex"
)

// runBinary runs the binary with args and returns its stdout, stderr and
// exit code.
func runBinary(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("%v: %v", args, err)
	}
	return o.String(), e.String(), code
}

var commands = []string{"register", "deregister", "nodes", "services"}

// TestUsageErrors: a stray argument or an unknown flag is refused with exit
// code 2 and the usage on stderr, before anything starts (the embedded
// configuration would bind 127.0.0.1:9090).
func TestUsageErrors(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	for _, args := range [][]string{
		{"help"},
		{"config.yaml"},
		{"-config", cfg, "extra"},
		{"-listen", "127.0.0.1:0", "--", "x"},
		{"-nope"},
		{"-config"},
		{"nodes", "extra"},
		{"register", "-nope"},
	} {
		stdout, stderr, code := runBinary(t, args...)
		if code != exitUsage || !strings.Contains(stderr, "usage: protoplex") || stdout != "" {
			t.Errorf("protoplex %q: exit %d, stdout %q, stderr:\n%s\nwant exit 2, usage on stderr, nothing on stdout", args, code, stdout, stderr)
		}
	}
	if _, stderr, _ := runBinary(t, "help"); !strings.Contains(stderr, `unexpected argument "help"`) {
		t.Errorf("protoplex help does not name the argument:\n%s", stderr)
	}
}

// helpFlags returns the flags a help text lists.
func helpFlags(help string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`(?m)^  -(\S+)`).FindAllStringSubmatch(help, -1) {
		out = append(out, m[1])
	}
	return out
}

// TestHelp: -h and --help print on stdout, exit 0, every flag and every
// sub-command with its one-line description; each sub-command has its own.
func TestHelp(t *testing.T) {
	for _, h := range []string{"-h", "--help", "-help"} {
		stdout, stderr, code := runBinary(t, h)
		if code != exitOK || stderr != "" {
			t.Fatalf("%s: exit %d, stderr %q", h, code, stderr)
		}
		if got, want := helpFlags(stdout), []string{"check", "config", "from-sslh", "from-sslh-args", "listen", "upgrade", "version", "watch"}; !slices.Equal(got, want) {
			t.Errorf("%s lists the flags %q, want %q:\n%s", h, got, want, stdout)
		}
		for _, c := range subcommands {
			if !regexp.MustCompile(`(?m)^  ` + c.name + ` +\S`).MatchString(stdout) {
				t.Errorf("%s does not list the sub-command %s with its description:\n%s", h, c.name, stdout)
			}
		}
	}
	for _, c := range commands {
		stdout, _, code := runBinary(t, c, "-h")
		if code != exitOK || !strings.Contains(stdout, "usage: protoplex "+c) || !slices.Contains(helpFlags(stdout), "etcd") {
			t.Errorf("%s -h: exit %d:\n%s", c, code, stdout)
		}
	}
}

// TestCLIDocumented: every flag of the binary and of each sub-command, every
// sub-command, environment variable and exit code is in docs/cli.md.
func TestCLIDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	stdout, _, _ := runBinary(t, "-h")
	flags := helpFlags(stdout)
	for _, c := range commands {
		if !bytes.Contains(doc, []byte("### "+c)) {
			t.Errorf("docs/cli.md has no section for the sub-command %s", c)
		}
		out, _, _ := runBinary(t, c, "-h")
		flags = append(flags, helpFlags(out)...)
	}
	for _, f := range flags {
		if !bytes.Contains(doc, []byte("`-"+f)) {
			t.Errorf("docs/cli.md does not document the flag -%s", f)
		}
	}
	for _, s := range []string{"PROTOPLEX_NODE_ID", "ETCD_ENDPOINTS", "LISTEN_FDS", "LISTEN_PID", "PROTOPLEX_UPGRADE_FD", "SIGHUP", "SIGUSR2", "upgraded: ", "SIGTERM", "SIGINT", "| 0 ", "| 1 ", "| 2 ", "listening: ", "metrics: ", "health: ", "route: ", "cluster: "} {
		if !bytes.Contains(doc, []byte(s)) {
			t.Errorf("docs/cli.md does not mention %q", s)
		}
	}
}

// TestVersion: -version names the module version and the VCS revision the
// build info holds; -ldflags -X main.version replaces the version only.
func TestVersion(t *testing.T) {
	stdout, _, code := runBinary(t, "-version")
	if code != exitOK || !regexp.MustCompile(`^protoplex \S+`).MatchString(stdout) || strings.Contains(stdout, "dev\n") {
		t.Fatalf("-version: exit %d: %q", code, stdout)
	}
	info, err := exec.Command("go", "version", "-m", binary).Output()
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`vcs\.revision=([0-9a-f]{12})`).FindSubmatch(info); m == nil {
		t.Logf("the binary has no VCS revision stamped (no git checkout?): none to compare")
	} else if !strings.Contains(stdout, "(rev "+string(m[1])) {
		t.Errorf("-version %q does not name the revision %s of the build info", stdout, m[1])
	}

	bin := filepath.Join(t.TempDir(), "protoplex")
	if out, err := exec.Command("go", "build", "-buildvcs=auto", "-ldflags", "-X main.version=v9.8.7", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "-version").Output()
	if err != nil || !strings.HasPrefix(string(out), "protoplex v9.8.7") {
		t.Fatalf("-version with -X main.version=v9.8.7: %v: %q", err, out)
	}
}

func TestFormatVersion(t *testing.T) {
	vcs := []debug.BuildSetting{{Key: "vcs.revision", Value: "abc1234def5678abc"}, {Key: "vcs.time", Value: "2026-12-01T20:00:00Z"}}
	for _, tc := range []struct {
		override string
		bi       debug.BuildInfo
		want     string
	}{
		{"", debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}, Settings: vcs}, "protoplex v1.2.3 (rev abc1234def56, 2026-12-01T20:00:00Z)"},
		{"", debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: append(slices.Clone(vcs), debug.BuildSetting{Key: "vcs.modified", Value: "true"})}, "protoplex (devel) (rev abc1234def56, 2026-12-01T20:00:00Z, modified)"},
		{"v2.0.0", debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs}, "protoplex v2.0.0 (rev abc1234def56, 2026-12-01T20:00:00Z)"},
		{"", debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, "protoplex v1.2.3"},
		{"", debug.BuildInfo{}, "protoplex (unknown)"},
	} {
		if got := formatVersion(tc.override, &tc.bi); got != tc.want {
			t.Errorf("formatVersion(%q, %v) = %q, want %q", tc.override, tc.bi.Main.Version, got, tc.want)
		}
	}
}

// TestDefaultLoopbackOnly: the embedded configuration (what runs without
// -config) binds loopback only, data and monitoring ports alike, so it
// never exposes the local services it forwards to; every address-like
// key of the embedded YAML is checked, whatever its name.
func TestDefaultLoopbackOnly(t *testing.T) {
	loopback := func(host string) bool {
		ip := net.ParseIP(host)
		return host == "localhost" || (ip != nil && ip.IsLoopback())
	}
	cfg := protoplex.DefaultConfig()
	if len(cfg.Server.Listen) == 0 {
		t.Fatal("the embedded configuration listens nowhere")
	}
	for _, a := range cfg.Server.Listen {
		if host, _, err := net.SplitHostPort(a); err != nil || !loopback(host) {
			t.Errorf("embedded server.listen %q is not a loopback address", a)
		}
	}
	if !loopback(cfg.Monitoring.BindAddress) {
		t.Errorf("embedded monitoring.bind_address %q is not loopback", cfg.Monitoring.BindAddress)
	}
	var doc any
	if err := yaml.Unmarshal(protoplex.DefaultConfigYAML(), &doc); err != nil {
		t.Fatal(err)
	}
	var walk func(key string, v any)
	walk = func(key string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				walk(k, x)
			}
		case []any:
			for _, x := range v {
				walk(key, x)
			}
		case string:
			if key != "listen" && key != "bind_address" && !strings.HasSuffix(key, "_address") {
				return
			}
			host := v
			if h, _, err := net.SplitHostPort(v); err == nil {
				host = h
			}
			if !loopback(host) {
				t.Errorf("embedded %s: %q is not loopback", key, v)
			}
		}
	}
	walk("", doc)
}

// TestActivationCountBounded: a LISTEN_FDS count out of range is an error
// naming the bound, not an allocation of that many listeners.
func TestActivationCountBounded(t *testing.T) {
	for _, n := range []string{"0", "-1", "65", "1000000000", "x"} {
		t.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
		t.Setenv("LISTEN_FDS", n)
		lns, err := activationListeners()
		if err == nil || lns.passed() || !strings.Contains(err.Error(), "from 1 to 64") {
			t.Errorf("LISTEN_FDS=%s: passed %v, %v", n, lns.passed(), err)
		}
	}
}

// TestRestartOnlyKeys: a reload that changes keys a running process does not
// rebind names them; log settings, routes and listen_udp are not among them.
func TestRestartOnlyKeys(t *testing.T) {
	parse := func(y string) *protoplex.Config {
		t.Helper()
		c, err := protoplex.ParseConfig([]byte(y+"protocols:\n  - name: SSH\n    target: \"127.0.0.1:22\"\n"), "r.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a := parse("server:\n  listen_udp: \"127.0.0.1:5353\"\n  log_level: info\nmonitoring:\n  metrics_port: 9091\n")
	b := parse("server:\n  listen_udp: \"127.0.0.1:5354\"\n  log_level: debug\nmonitoring:\n  metrics_port: 9093\n")
	got := strings.Join(restartOnly(a, b, ""), ",")
	if got != "monitoring.metrics_port" { // listen_udp is rebound on reload
		t.Fatalf("restart-only keys %q", got)
	}
	// The data plane and its loops: a file that leaves them out runs the
	// defaults, so writing the defaults out changes nothing.
	for _, tc := range []struct{ from, to, want string }{
		{"", "server:\n  data_plane: events\n  event_loops: 0\n", ""},
		{"", "server:\n  data_plane: goroutines\n", "server.data_plane"},
		{"server:\n  data_plane: goroutines\n", "", "server.data_plane"},
		{"", "server:\n  event_loops: 4\n", "server.event_loops"},
		{"server:\n  event_loops: 2\n", "server:\n  data_plane: goroutines\n  event_loops: 4\n", "server.data_plane,server.event_loops"},
	} {
		if got := strings.Join(restartOnly(parse(tc.from), parse(tc.to), ""), ","); got != tc.want {
			t.Errorf("%q -> %q: restart-only keys %q, want %q", tc.from, tc.to, got, tc.want)
		}
	}
}
