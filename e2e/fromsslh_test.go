package e2e

import (
	"bufio"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// convertSSLH runs the binary's -from-sslh (file, or -from-sslh-args when
// file is "") and returns the path of the YAML it printed.
func convertSSLH(t *testing.T, bin, file, args string) string {
	t.Helper()
	cmdArgs := []string{"-from-sslh", file}
	if file == "" {
		cmdArgs = []string{"-from-sslh-args", args}
	}
	cmd := exec.Command(bin, cmdArgs...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("protoplex %q: %v\n%s", cmdArgs, err, stderr.String())
	}
	path := filepath.Join(t.TempDir(), "converted.yaml")
	testnet.WriteFile(t, path, string(out))
	return path
}

// greeter is a server-speaks-first backend (daytime): it writes line to
// every client at once.
func greeter(t *testing.T, line string) string {
	return testnet.Serve(t, func(c net.Conn) { io.WriteString(c, line) })
}

// silentClient connects, sends nothing, and returns the first line the
// server behind addr says.
func silentClient(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("silent client: %v after %q", err, line)
	}
	return line
}

// TestFromSSLH: Debian's example.cfg, with its backends moved to real
// servers started here, converted by the binary and served by it: ssh to
// sshd, curl to nginx over HTTP and over TLS by ALPN, openssl to nginx by
// SNI, a silent client to the daytime-like target of on-timeout, and bytes
// no route knows to the catch-all. Then Debian's DAEMON_OPTS line, the same
// way.
func TestFromSSLH(t *testing.T) {
	bin := buildCLI(t)
	web := startNginx(t, "hello from nginx", "")
	tlsDefault := startNginx(t, "tls default", "localhost")
	tlsMail := startNginx(t, "tls mail", "mail.rutschle.net")
	sshd, sshArgs := startSSHD(t)
	daytime := greeter(t, "daytime via protoplex\n")
	anyprot := testnet.Banner(t, "anyprot:")

	raw, err := os.ReadFile("../internal/sslhconv/testdata/debian-example.cfg")
	if err != nil {
		t.Fatal(err)
	}
	portOf := func(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }
	ports := strings.NewReplacer(`port: "22"`, `port: "`+portOf(sshd)+`"`, `port: "80"`, `port: "`+portOf(web)+`"`,
		`port: "443"`, `port: "`+portOf(tlsDefault)+`"`, `port: "993"`, `port: "`+portOf(tlsMail)+`"`,
		`port: "daytime"`, `port: "`+portOf(daytime)+`"`, `host: "localhost"`, `host: "127.0.0.1"`)
	catchAll := regexp.MustCompile(`port: "443"; (regex_patterns: \[ "" \])`)
	var lines []string
	for _, l := range strings.Split(string(raw), "\n") {
		l = catchAll.ReplaceAllString(l, `port: "`+portOf(anyprot)+`"; $1`)
		lines = append(lines, ports.Replace(l))
	}
	cfg := filepath.Join(t.TempDir(), "sslh.cfg")
	testnet.WriteFile(t, cfg, strings.Join(lines, "\n"))
	yaml := convertSSLH(t, bin, cfg, "")
	addr, _, _ := startCLI(t, bin, "-config", yaml, "-listen", "127.0.0.1:0")

	t.Run("ssh", func(t *testing.T) {
		args := append(sshArgs, "-p", port(addr), "root@127.0.0.1", "echo", "via-protoplex")
		out, err := run(t, 30*time.Second, requireBinary(t, "ssh"), args...)
		if err != nil || strings.TrimSpace(out) != "via-protoplex" {
			t.Fatalf("%v: %q", err, out)
		}
	})
	t.Run("curl-http", func(t *testing.T) {
		out, err := run(t, 20*time.Second, requireBinary(t, "curl"), "-sS", "http://"+addr+"/")
		if err != nil || out != "hello from nginx" {
			t.Fatalf("%v: %q", err, out)
		}
	})
	t.Run("curl-alpn", func(t *testing.T) {
		// ALPN h2,http/1.1: example.cfg's "just match ALPN" entry.
		out, err := run(t, 20*time.Second, requireBinary(t, "curl"), "-sSk", "https://"+addr+"/")
		if err != nil || out != "tls default" {
			t.Fatalf("%v: %q", err, out)
		}
	})
	t.Run("openssl-sni", func(t *testing.T) {
		out, err := runStdin(t, 20*time.Second, "GET / HTTP/1.0\r\nHost: mail.rutschle.net\r\n\r\n",
			requireBinary(t, "openssl"), "s_client", "-connect", addr, "-servername", "mail.rutschle.net", "-quiet", "-verify_quiet")
		if !strings.Contains(out, "tls mail") {
			t.Fatalf("%v: %q", err, out)
		}
	})
	t.Run("silent", func(t *testing.T) {
		if got := silentClient(t, addr); got != "daytime via protoplex\n" {
			t.Fatalf("silent client got %q", got)
		}
	})
	t.Run("anyprot", func(t *testing.T) {
		// More than identify_min_bytes: the regex routes stay undecided
		// until then (docs/migrating-from-sslh.md).
		junk := strings.Repeat("z", 2048) + "\n"
		if got := exchangeWith(addr, junk); got != "anyprot:"+junk {
			t.Fatalf("unknown bytes: got %d bytes %.40q", len(got), got)
		}
	})

	// Debian's /etc/default/sslh, with the placeholder filled in.
	yaml = convertSSLH(t, bin, "", `DAEMON_OPTS="--user sslh --listen 0.0.0.0:443 --ssh `+sshd+` --ssl `+tlsDefault+` --pidfile /var/run/sslh/sslh.pid"`)
	addr, _, _ = startCLI(t, bin, "-config", yaml, "-listen", "127.0.0.1:0")
	t.Run("daemon-opts", func(t *testing.T) {
		args := append(sshArgs, "-p", port(addr), "root@127.0.0.1", "echo", "via-protoplex")
		if out, err := run(t, 30*time.Second, requireBinary(t, "ssh"), args...); err != nil || strings.TrimSpace(out) != "via-protoplex" {
			t.Fatalf("ssh: %v: %q", err, out)
		}
		if out, err := run(t, 20*time.Second, requireBinary(t, "curl"), "-sSk", "https://"+addr+"/"); err != nil || out != "tls default" {
			t.Fatalf("curl: %v: %q", err, out)
		}
		// Silent clients go to ssh (sslh's default on-timeout): sshd's banner.
		if got := silentClient(t, addr); !strings.HasPrefix(got, "SSH-2.0-") {
			t.Fatalf("silent client got %q", got)
		}
	})
}

// TestCatchAllEntries: the two ways to write sslh's default route — an
// anyprot entry, or a second entry of a protocol marked fallback — take
// the bytes no route matches, while that protocol's clients keep going to
// its first entry.
func TestCatchAllEntries(t *testing.T) {
	web, other := testnet.Banner(t, "web:"), testnet.Banner(t, "other:")
	for _, second := range []string{"name: anyprot", "name: HTTP\n    fallback: true"} {
		addr, _ := startConfigured(t, "protocols:\n  - name: HTTP\n    target: \""+web+"\"\n  - "+second+"\n    target: \""+other+"\"\n")
		if got := exchangeWith(addr, "GET / HTTP/1.0\r\n\r\n"); got != "web:GET / HTTP/1.0\r\n\r\n" {
			t.Errorf("%s: HTTP went to %q", second, got)
		}
		if got := exchangeWith(addr, "zzzz\r\n"); got != "other:zzzz\r\n" {
			t.Errorf("%s: unknown bytes went to %q", second, got)
		}
	}
}
