package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// binary is the protoplex command built once for the subprocess tests.
var binary string

func TestMain(m *testing.M) {
	if fakeNewBinary() { // this test binary stands in for a new protoplex an upgrade starts
		return
	}
	dir, err := os.MkdirTemp("", "protoplex-cli")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "protoplex")
	// -buildvcs=auto stamps the VCS revision that -version prints, even
	// where GOFLAGS turns stamping off; where git cannot tell (a checkout
	// git refuses to read), the build goes on without it.
	out, err := exec.Command("go", "build", "-buildvcs=auto", "-o", binary, ".").CombinedOutput()
	if err != nil {
		out, err = exec.Command("go", "build", "-buildvcs=false", "-o", binary, ".").CombinedOutput()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	testnet.WriteFile(t, good, "server:\n  listen: \"127.0.0.1:0\"\nprotocols:\n  - name: SSH\n    target: \"127.0.0.1:22\"\n")
	out, err := exec.Command(binary, "-check", "-config", good).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("good config: %v: %s", err, out)
	}
	bad := filepath.Join(dir, "bad.yaml")
	testnet.WriteFile(t, bad, "server:\n  listen: \"127.0.0.1:0\"\nprotocols:\n  - name: SSH\n    target: \"127.0.0.1:99999\"\n")
	out, err = exec.Command(binary, "-check", "-config", bad).CombinedOutput()
	if err == nil {
		t.Fatalf("bad config accepted: %s", out)
	}
	if !strings.Contains(string(out), "bad.yaml:5") {
		t.Fatalf("error does not name file:line: %s", out)
	}
	// Configs that would take the service down fail -check: no protocols
	// (an empty or truncated file), a pool that would exhaust memory, a port
	// that exists only at bind time, transparent UDP.
	for name, content := range map[string]string{
		"empty.yaml":   "",
		"noroute.yaml": "protocols: []\n",
		"pool.yaml":    "protocols:\n  - name: SSH\n    target: \"127.0.0.1:22\"\n    pool: {min_idle: 2000000000}\n",
		"listen.yaml":  "server:\n  listen: \"127.0.0.1:99999\"\nprotocols:\n  - name: SSH\n    target: \"127.0.0.1:22\"\n",
		// UDP flows are not transparent: refused rather than half applied
		// (line 2 on Linux, where transparent exists at all).
		"transparent_udp.yaml": "server:\n  transparent: true\n  listen_udp: \"127.0.0.1:5353\"\nprotocols:\n  - name: DNS\n    target: \"127.0.0.1:53\"\n",
	} {
		path := filepath.Join(dir, name)
		testnet.WriteFile(t, path, content)
		out, err := exec.Command(binary, "-check", "-config", path).CombinedOutput()
		if err == nil || !strings.Contains(string(out), name+":") {
			t.Errorf("-check %s: %v: %s", name, err, out)
		}
	}
	// Starting with a bad config fails too, with the same precise error.
	cmd := exec.Command(binary, "-config", bad)
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "bad.yaml:5") {
		t.Fatalf("start with bad config: %v: %s", err, out)
	}
}

// proc is a running protoplex subprocess; its stdout is kept apart from
// its stderr (Out), which the tests read for log lines.
type proc struct {
	*testnet.Process
	stdout *testnet.Buffer
}

func start(t *testing.T, args ...string) *proc {
	t.Helper()
	return startCmd(t, exec.Command(binary, args...))
}

// startCmd starts cmd (the binary, or a program that runs it) as a proc.
func startCmd(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	stdout := &testnet.Buffer{}
	cmd.Stdout = stdout
	return &proc{Process: testnet.StartProcess(t, cmd), stdout: stdout}
}

// waitLine returns the submatches of the first stdout line matching re.
func (p *proc) waitLine(t *testing.T, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(`(?m)` + re)
	var m []string
	testnet.Eventually(t, 15*time.Second, func() bool {
		m = rx.FindStringSubmatch(p.stdout.String())
		if m == nil {
			select {
			case <-p.Exited():
				t.Fatalf("process ended before a line %q; stderr:\n%s", re, p.Out)
			default:
			}
		}
		return m != nil
	}, "no line %q; stderr:\n%s", re, p.Out)
	return m
}

// ask sends line through addr and returns the reply ("" when the
// connection fails).
func ask(addr, line string) string {
	reply, _ := testnet.RoundTrip(addr, line)
	return reply
}

// logged returns a condition for testnet.Eventually: p's stderr contains s.
func (p *proc) logged(s string) func() bool {
	return func() bool { return strings.Contains(p.Out.String(), s) }
}

// TestCheckSpeaksYAML: the friction list of a migrating user, through the
// real binary: one file with every mistake gets every error at once, each
// with file:line, in YAML terms, and exit code 1.
func TestCheckSpeaksYAML(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.yaml")
	testnet.WriteFile(t, path, `server:
  listen: "127.0.0.1:99999"
  max_conections: 10
  identify_timeout: 5
  log_level: verbose
protocols:
  - name: TSL
    target: "127.0.0.1:443"
  - name: TLS
    sni: '^api\..*$'
    target: "127.0.0.1:8443"
  - name: SSH
    target: "127.0.0.1:22"
    health_check: {interval: "5s", check: tcpp}
    pool: {min_idle: -1}
`)
	cmd := exec.Command(binary, "-check", "-config", path)
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); err == nil || code != 1 {
		t.Fatalf("-check exit %d (%v), want 1:\n%s", code, err, out)
	}
	for _, want := range []string{
		`m.yaml:2: server.listen[0]: "127.0.0.1:99999": port "99999" is not a number in 0..65535`,
		`m.yaml:3: server: unknown key "max_conections" (did you mean "max_connections"?)`,
		`m.yaml:4: server.identify_timeout: want a duration such as "5s", got 5`,
		`m.yaml:5: server.log_level: "verbose": want debug, info, warn or error`,
		`"TSL" is not a built-in protocol (did you mean "tls"?)`,
		`sni "^api\\..*$" looks like a regular expression`,
		`health_check.check "tcpp": want tcp, redis, http or dns`,
		`pool.min_idle: -1 is outside [0, 1000]`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("-check output lacks %q:\n%s", want, out)
		}
	}
}
