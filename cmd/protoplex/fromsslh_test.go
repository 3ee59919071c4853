package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darkit/protoplex/internal/testnet"
)

// debianExample is the example configuration Debian's sslh package ships.
const debianExample = "/usr/share/doc/sslh/examples/example.cfg"

// convertAndCheck runs -from-sslh with args, expects exit 0, writes the
// YAML to a file and runs -check on it, which must print ok.
func convertAndCheck(t *testing.T, args ...string) string {
	t.Helper()
	stdout, stderr, code := runBinary(t, args...)
	if code != exitOK || stderr != "" {
		t.Fatalf("protoplex %q: exit %d, stderr:\n%s", args, code, stderr)
	}
	path := filepath.Join(t.TempDir(), "converted.yaml")
	testnet.WriteFile(t, path, stdout)
	out, errOut, code := runBinary(t, "-check", "-config", path)
	if code != exitOK || strings.TrimSpace(out) != "ok" {
		t.Fatalf("-check on the conversion of %q: exit %d: %s%s\n%s", args, code, out, errOut, stdout)
	}
	return stdout
}

// TestFromSSLH: Debian's example.cfg (the installed one, and the copy in
// testdata) and a Debian DAEMON_OPTS line convert into configurations that
// pass -check, service names resolved from /etc/services; the command
// line applies over a file.
func TestFromSSLH(t *testing.T) {
	copyOf := "../../internal/sslhconv/testdata/debian-example.cfg"
	out := convertAndCheck(t, "-from-sslh", copyOf)
	for _, want := range []string{`- name: "anyprot"`, `- name: "timeout"`, `target: "localhost:13"`, `# sslh ` + copyOf + `:12: user: "nobody"`} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	out = convertAndCheck(t, "-from-sslh-args", `DAEMON_OPTS="--user sslh --listen 0.0.0.0:443 --ssh 127.0.0.1:22 --ssl 127.0.0.1:443 --pidfile /var/run/sslh/sslh.pid"`)
	if !strings.Contains(out, `- name: "ssh"`) || !strings.Contains(out, "server_first: true") || !strings.Contains(out, "fallback: true") {
		t.Fatalf("DAEMON_OPTS:\n%s", out)
	}
	out = convertAndCheck(t, "-from-sslh", copyOf, "-from-sslh-args", "-p 127.0.0.1:4443 --anyprot 127.0.0.1:8080")
	if !strings.Contains(out, `"127.0.0.1:4443"`) || !strings.Contains(out, `target: "127.0.0.1:8080"`) {
		t.Fatalf("-from-sslh with -from-sslh-args:\n%s", out)
	}
	// The installed file too, when the package's docs are there (images
	// that exclude /usr/share/doc from dpkg have the binary only; the
	// testdata copy above is the same file).
	if _, err := os.Stat(debianExample); err != nil {
		t.Skipf("%s: %v (scripts/install-test-deps.sh installs sslh)", debianExample, err)
	}
	convertAndCheck(t, "-from-sslh", debianExample)
}

// TestFromSSLHErrors: what cannot be converted exits 1 with file:line (or
// the command line) on stderr and nothing on stdout; a bad command line
// quoting is a usage error.
func TestFromSSLHErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "sslh.cfg")
	testnet.WriteFile(t, bad, "listen: ( { host: \"h\"; port: \"443\"; } );\nprotocols: (\n  { name: \"ssh\"; host: \"h\"; port: \"22\" }\n  { name: \"tls\"; host: \"h\"; port: \"443\"; }\n);\n")
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-from-sslh", bad}, exitFail, bad + `:4: want ',' or ')' in a list ( ), got "{"`},
		{[]string{"-from-sslh", filepath.Join(dir, "missing.cfg")}, exitFail, "no such file"},
		{[]string{"-from-sslh", dir}, exitFail, "not a regular file"},
		{[]string{"-from-sslh-args", `DAEMON_OPTS="--user sslh --listen <change-me>:443 --ssh 127.0.0.1:22 --ssl 127.0.0.1:443"`}, exitFail, `listen host "<change-me>": a placeholder`},
		{[]string{"-from-sslh-args", `--ssh 'h:22`}, exitUsage, "a ' is never closed"},
	} {
		stdout, stderr, code := runBinary(t, c.args...)
		if code != c.code || stdout != "" || !strings.Contains(stderr, c.want) {
			t.Errorf("protoplex %q: exit %d, stdout %q, stderr %q; want exit %d and %q", c.args, code, stdout, stderr, c.code, c.want)
		}
	}
	// A conversion the checker refuses: the YAML on stdout to fix, the
	// checker's errors on stderr, exit 1.
	big := filepath.Join(dir, "big-regex.cfg")
	testnet.WriteFile(t, big, "listen: ( { host: \"h\"; port: \"443\"; } );\nprotocols: ( { name: \"regex\"; host: \"h\"; port: \"1\"; regex_patterns: [ \"x{1000}y{1000}\" ]; } );\n")
	stdout, stderr, code := runBinary(t, "-from-sslh", big)
	if code != exitFail || !strings.Contains(stdout, "match_regexes") || !strings.Contains(stderr, "the converted configuration fails the check") || !strings.Contains(stderr, "compiles to") {
		t.Fatalf("exit %d, stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}
