package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// whichBackend connects to addr, writes flight (nothing when empty) and
// returns the first line the server behind says: a greeter's name.
func whichBackend(t *testing.T, addr string, flight []byte) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if len(flight) > 0 {
		if _, err := c.Write(flight); err != nil {
			t.Fatal(err)
		}
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Sprintf("(nothing: %v)", err)
	}
	return strings.TrimSpace(line)
}

// TestSSLHAndConvertedAgree runs the real sslh (Debian's package) with an
// sslh.cfg and protoplex with its conversion side by side, and sends each
// the same recorded first flights, a silent client and unknown bytes:
// both pick the same backend, but for the one difference
// docs/migrating-from-sslh.md describes (probe order against ranking): a
// ClientHello with both SNI a.example and ALPN h2 goes to the ALPN entry
// sslh lists first, and to the SNI entry protoplex ranks first.
func TestSSLHAndConvertedAgree(t *testing.T) {
	sslh := requireBinary(t, "sslh")
	bin := buildCLI(t)
	names := []string{"ssh", "http", "tls-sni", "tls-alpn", "tls", "openvpn", "socks5", "anyprot"}
	backends := map[string]string{}
	for _, n := range names {
		backends[n] = greeter(t, n+"\n")
	}
	target := func(n string) string {
		_, p, _ := net.SplitHostPort(backends[n])
		return fmt.Sprintf(`host: "127.0.0.1"; port: "%s";`, p)
	}
	sslhPort, sslhAddr := loopbackPort(t)
	cfg := fmt.Sprintf(`foreground: true;
timeout: 2;
listen: ( { host: "127.0.0.1"; port: "%d"; } );
protocols: (
  { name: "ssh"; %s },
  { name: "http"; %s },
  { name: "tls"; %s alpn_protocols: [ "h2" ]; },
  { name: "tls"; %s sni_hostnames: [ "a.example" ]; },
  { name: "tls"; %s },
  { name: "openvpn"; %s },
  { name: "socks5"; %s },
  { name: "anyprot"; %s }
);
on-timeout: "ssh";
`, sslhPort, target("ssh"), target("http"), target("tls-alpn"), target("tls-sni"), target("tls"), target("openvpn"), target("socks5"), target("anyprot"))
	path := filepath.Join(t.TempDir(), "sslh.cfg")
	testnet.WriteFile(t, path, cfg)
	startProcess(t, sslhPort, exec.Command(sslh, "-F"+path, "-f"))
	plex, _, _ := startCLI(t, bin, "-config", convertSSLH(t, bin, path, ""), "-listen", "127.0.0.1:0")

	flight := func(name string) []byte {
		b, err := os.ReadFile("../protocols/testdata/flights/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, c := range []struct {
		name       string
		flight     []byte
		want, sslh string // sslh: where sslh differs
	}{
		{"ssh", flight("ssh-openssh.bin"), "ssh", ""},
		{"curl", flight("http-curl.bin"), "http", ""},
		{"chromium, SNI a.example, ALPN h2", flight("tls-chromium.bin"), "tls-sni", "tls-alpn"},
		{"go, ALPN h2", flight("tls-go.bin"), "tls-alpn", ""},
		{"curl, ALPN h2", flight("tls-curl.bin"), "tls-alpn", ""},
		{"openssl, no SNI", flight("tls-openssl-nosni.bin"), "tls", ""},
		{"openvpn", flight("openvpn-openvpn.bin"), "openvpn", ""},
		{"socks5", flight("socks5-curl.bin"), "socks5", ""},
		{"unknown bytes", []byte("zzzz not a protocol\r\n"), "anyprot", ""},
		{"silent client", nil, "ssh", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, p := whichBackend(t, sslhAddr, c.flight), whichBackend(t, plex, c.flight)
			wantSSLH := c.want
			if c.sslh != "" {
				wantSSLH = c.sslh
			}
			if s != wantSSLH || p != c.want {
				t.Fatalf("sslh chose %q, protoplex %q; want %q and %q", s, p, wantSSLH, c.want)
			}
		})
	}
}
