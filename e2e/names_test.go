package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// TestSNIFileRealClients: the binary routes openssl's TLS clients by a
// sni_file of 10,000 names (exact and wildcard), reads the file again when
// the configuration reloads, and keeps serving the previous names when the
// new file has a bad line, which the log names with the file's line.
func TestSNIFileRealClients(t *testing.T) {
	openssl := requireBinary(t, "openssl")
	tlsA := startNginx(t, "tls backend A", "a.example")
	tlsB := startNginx(t, "tls backend B", "b.example")
	bin := buildCLI(t)
	dir := t.TempDir()
	names := filepath.Join(dir, "tenants.txt")
	list := func(extra ...string) string {
		var b strings.Builder
		b.WriteString("# tenants of backend A\n")
		for i := range 10_000 {
			fmt.Fprintf(&b, "t%d.example\n", i)
		}
		b.WriteString("*.wild.example   # every name below wild.example\n")
		for _, e := range extra {
			b.WriteString(e + "\n")
		}
		return b.String()
	}
	testnet.WriteFile(t, names, list())
	cfg := filepath.Join(dir, "protoplex.yaml")
	yaml := func(n int) string {
		return fmt.Sprintf(`# revision %d
server:
  listen: "127.0.0.1:0"
protocols:
  - name: tls
    target: %q
    sni_file: tenants.txt
  - name: tls
    target: %q
monitoring:
  metrics_port: 0
  health_check_port: 0
`, n, tlsA, tlsB)
	}
	testnet.WriteFile(t, cfg, yaml(1))
	addr, p, _ := startCLI(t, bin, "-config", cfg)
	routed := func(sni string) string {
		out, _ := runStdin(t, 20*time.Second, "GET / HTTP/1.0\r\nHost: "+sni+"\r\n\r\n",
			openssl, "s_client", "-connect", addr, "-servername", sni, "-quiet", "-verify_quiet")
		switch {
		case strings.Contains(out, "tls backend A"):
			return "A"
		case strings.Contains(out, "tls backend B"):
			return "B"
		}
		return "none: " + out
	}
	for sni, want := range map[string]string{"t0.example": "A", "t9999.example": "A", "x.wild.example": "A", "wild.example": "B", "new.example": "B"} {
		if got := routed(sni); got != want {
			t.Errorf("SNI %s: backend %s, want %s", sni, got, want)
		}
	}

	// A reload reads the file again.
	testnet.WriteFile(t, names, list("new.example"))
	testnet.WriteFile(t, cfg, yaml(2))
	p.Cmd.Process.Signal(syscall.SIGHUP)
	waitUntil(t, "new.example routed to A after the reload", func() bool { return routed("new.example") == "A" })

	// A bad line rejects the reload; the names of the last good file stay.
	testnet.WriteFile(t, names, list("newer.example", "bad name"))
	testnet.WriteFile(t, cfg, yaml(3))
	p.Cmd.Process.Signal(syscall.SIGHUP)
	waitUntil(t, "the rejected names file logged with its line", func() bool {
		return strings.Contains(p.Out.String(), `tenants.txt:10004: protocols[0] (tls): sni_file: \"bad name\" is not a host name`)
	})
	if got := routed("new.example"); got != "A" {
		t.Errorf("after the rejected reload, new.example: backend %s, want A", got)
	}
	if got := routed("newer.example"); got != "B" {
		t.Errorf("after the rejected reload, newer.example: backend %s, want B (the file was refused)", got)
	}
}
