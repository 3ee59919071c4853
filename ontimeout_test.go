package protoplex

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// serveYAML serves the configuration y with a new manager and returns its
// address.
func serveYAML(t *testing.T, y string) string {
	t.Helper()
	cfg, err := ParseConfig([]byte(y), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pm := NewProtocolManager(WithLogger(discardLogger()))
	if err := pm.UpdateConfig(cfg); err != nil {
		t.Fatal(err)
	}
	return serveTest(t, pm)
}

// silentRead connects to addr, sends nothing and returns the first line
// the far end sends, or "" when it closes first.
func silentRead(t *testing.T, addr string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil && err != io.EOF {
		t.Fatalf("read: %v", err)
	}
	return line
}

// TestOnTimeout: sslh's on_timeout. A client that stays silent for
// server_first_wait goes to the protocol marked server_first: true, or
// named by server.on_timeout, here SSH, a built-in detected from the
// client's bytes otherwise: its backend speaks first and the client gets
// the banner. A client that speaks is identified as before.
func TestOnTimeout(t *testing.T) {
	sshd := testnet.Record(t, "SSH-2.0-backend\r\n")
	web := testnet.Banner(t, "WEB:")
	config := func(server, entry string) string {
		return "server:\n  server_first_wait: 50ms\n  identify_timeout: 10s\n" + server +
			fmt.Sprintf("protocols:\n  - name: HTTP\n    target: %q\n  - name: SSH\n    target: %q\n", web, sshd.Addr) + entry
	}
	for _, c := range []struct{ name, server, entry string }{
		{"server_first", "", "    server_first: true\n"},
		{"on_timeout", "  on_timeout: ssh\n", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr := serveYAML(t, config(c.server, c.entry))
			before := sshd.Accepted()
			if got := silentRead(t, addr); got != "SSH-2.0-backend\r\n" {
				t.Fatalf("silent client got %q, want the SSH banner", got)
			}
			if got := sshd.Accepted(); got != before+1 {
				t.Fatalf("SSH backend accepted %d connections, want %d", got, before+1)
			}
			if got := roundTrip(t, addr, "GET / HTTP/1.0\r\n\r\n"); !strings.HasPrefix(got, "WEB:GET / HTTP/1.0") {
				t.Fatalf("HTTP client got %q", got)
			}
			if got := roundTrip(t, addr, "SSH-2.0-client\r\n"); got != "SSH-2.0-backend\r\n" {
				t.Fatalf("SSH client got %q", got)
			}
		})
	}
	// Unmarked, SSH waits for the client's bytes: a silent client is
	// closed at identify_timeout without reaching a backend.
	before := sshd.Accepted()
	addr := serveYAML(t, strings.Replace(config("", ""), "identify_timeout: 10s", "identify_timeout: 200ms", 1))
	if got := silentRead(t, addr); got != "" {
		t.Fatalf("silent client got %q with no protocol chosen on silence", got)
	}
	if got := sshd.Accepted(); got != before {
		t.Fatalf("SSH backend reached by a silent client")
	}
}

// TestCheckConfigFileFriction: protoplex -check refuses each value that
// would fail or misbehave once running, all of them at once, each with
// file:line, in YAML terms.
func TestCheckConfigFileFriction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	y := `server:
  listen: 127.0.0.1:99999
  log_level: verbose
  max_conections: 5
  identify_timeout: 5
protocols:
  - name: SSH
    target: "127.0.0.1:22"
    pool: {min_idle: -1}
    health_check: {interval: 5s, check: tcpp}
  - name: TLS
    target: "127.0.0.1:443"
    sni: ['^api\..*$', 'api.*.com', '[a-z]+.example']
  - name: TSL
    target: "127.0.0.1:443"
`
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	err := CheckConfigFile(path)
	if err == nil {
		t.Fatal("-check accepted it")
	}
	for _, want := range []string{
		`c.yaml:2: server.listen[0]: "127.0.0.1:99999": port "99999" is not a number in 0..65535`,
		`c.yaml:3: server.log_level: "verbose": want debug, info, warn or error`,
		`c.yaml:4: server: unknown key "max_conections" (did you mean "max_connections"?)`,
		`c.yaml:5: server.identify_timeout: want a duration such as "5s", got 5`,
		`c.yaml:9: protocols[0] (SSH): pool.min_idle: -1 is outside [0, 1000]`,
		`c.yaml:10: protocols[0] (SSH): health_check.check "tcpp": want tcp, redis, http or dns`,
		`c.yaml:13: protocols[1] (TLS): sni "^api\\..*$" looks like a regular expression or a glob: only exact names and a leading "*." wildcard`,
		`c.yaml:13: protocols[1] (TLS): sni "api.*.com" looks like`,
		`c.yaml:13: protocols[1] (TLS): sni "[a-z]+.example" looks like`,
		`c.yaml:14: protocols[2] (TSL): "TSL" is not a built-in protocol (did you mean "tls"?)`,
	} {
		if !strings.Contains(err.Error(), path[:len(path)-len("c.yaml")]+want) {
			t.Errorf("missing %s", want)
		}
	}
	if t.Failed() {
		t.Logf("got:\n%v", err)
	}
}
