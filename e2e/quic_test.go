package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// TestQUICBySNI: two QUIC servers (ngtcp2's gtlsserver, each with its own
// certificate and document) behind one protoplex UDP port, routed by the
// SNI of the ClientHello in the clients' Initial packets. ngtcp2's
// gtlsclient (it sends the SNI "localhost") fetches the document of its
// server over HTTP/3; quic-go's client (a module of its own under
// protocols/testdata/quicgo, its ClientHello spread over two datagrams)
// completes a handshake with SNI b.example and reports the certificate it
// got. The route for b.example comes first, so the other flow is not just
// taking the first QUIC route.
func TestQUICBySNI(t *testing.T) {
	server := requireBinary(t, "gtlsserver")
	client := requireBinary(t, "gtlsclient")
	goBin := requireBinary(t, "go")
	dir := t.TempDir()
	a := startGtlsserver(t, server, client, dir, "localhost")
	b := startGtlsserver(t, server, client, dir, "b.example")
	addr, _ := startUDPMux(t, fmt.Sprintf("protocols:\n"+
		"  - name: quic\n    sni: b.example\n    target: %q\n"+
		"  - name: quic\n    sni: localhost\n    alpn: h3\n    target: %q\n", b, a))

	if got := fetchWho(t, client, addr, filepath.Join(dir, "through")); got != "localhost" {
		t.Fatalf("gtlsclient with SNI localhost reached the server of %q", got)
	}
	// The helper is built first, apart from its run, so what the go command
	// prints while it fetches quic-go (an empty module cache) never mixes
	// with the answer; only the client's stdout is compared.
	// scripts/install-test-deps.sh fetches the module ahead of the tests.
	helper := filepath.Join(dir, "quicgo")
	if out, err := run(t, 3*time.Minute, goBin, "-C", filepath.Join("..", "protocols", "testdata", "quicgo"),
		"build", "-o", helper, "."); err != nil {
		t.Fatalf("building quic-go's client: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, helper, "-dial", addr, "-sni", "b.example", "-alpn", "h3")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.WaitDelay = time.Second
	out, err := cmd.Output()
	if err != nil || strings.TrimSpace(string(out)) != "server: b.example" {
		t.Fatalf("quic-go's client with SNI b.example: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.String())
	}
}

// startGtlsserver runs gtlsserver on a free UDP port of 127.0.0.1 with a
// self-signed certificate for name and a document /who that says name. It
// is ready when gtlsclient fetches that document from it directly.
func startGtlsserver(t *testing.T, server, client, dir, name string) string {
	t.Helper()
	cert, key := selfSigned(t, dir, name)
	docs := filepath.Join(dir, "docs-"+name)
	if err := os.Mkdir(docs, 0o755); err != nil {
		t.Fatal(err)
	}
	testnet.WriteFile(t, filepath.Join(docs, "who"), name)
	port, addr := loopbackPort(t)
	p := testnet.StartProcess(t, exec.Command(server, "-q", "-d", docs, "127.0.0.1", strconv.Itoa(port), key, cert))
	testnet.Eventually(t, 15*time.Second, func() bool {
		return fetchWhoOnce(client, addr, filepath.Join(dir, "ready-"+name)) == name
	}, "gtlsserver for %s never served on %s; its output:\n%s", name, addr, p.Out)
	return addr
}

// fetchWho fetches https://localhost/who with gtlsclient from addr and
// returns the document.
func fetchWho(t *testing.T, client, addr, into string) string {
	t.Helper()
	got := fetchWhoOnce(client, addr, into)
	if got == "" {
		t.Fatalf("gtlsclient fetched nothing from %s", addr)
	}
	return got
}

func fetchWhoOnce(client, addr, into string) string {
	if err := os.MkdirAll(into, 0o755); err != nil {
		return ""
	}
	host, port, _ := strings.Cut(addr, ":")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, client, "-q", "--exit-on-all-streams-close", "--timeout=5s", "--download="+into,
		host, port, "https://localhost/who")
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(into, "who"))
	if err != nil {
		return ""
	}
	_ = os.Remove(filepath.Join(into, "who"))
	return string(b)
}

// TestQUICBulkDownload: an 8 MiB HTTP/3 download by gtlsclient from
// gtlsserver through protoplex arrives byte for byte. gtlsserver sends its
// bursts as UDP_SEGMENT trains; on the event loops the flow's upstream
// socket reads each whole (UDP_GRO) and sends it on as one train, so a
// train cut wrongly would corrupt or stall the download.
func TestQUICBulkDownload(t *testing.T) {
	server := requireBinary(t, "gtlsserver")
	client := requireBinary(t, "gtlsclient")
	dir := t.TempDir()
	a := startGtlsserver(t, server, client, dir, "localhost")
	want := make([]byte, 8<<20)
	if _, err := rand.Read(want); err != nil {
		t.Fatal(err)
	}
	testnet.WriteFile(t, filepath.Join(dir, "docs-localhost", "big"), string(want))
	addr, _ := startUDPMux(t, fmt.Sprintf("protocols:\n  - name: quic\n    target: %q\n", a))
	into := filepath.Join(dir, "through")
	if err := os.MkdirAll(into, 0o755); err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(addr, ":")
	out, err := run(t, time.Minute, client, "-q", "--exit-on-all-streams-close", "--timeout=10s", "--download="+into,
		host, port, "https://localhost/big")
	got, rerr := os.ReadFile(filepath.Join(into, "big"))
	if rerr != nil || !bytes.Equal(got, want) {
		t.Fatalf("downloaded %d of %d bytes (equal: %v; %v); gtlsclient: %v\n%s", len(got), len(want), bytes.Equal(got, want), rerr, err, out)
	}
}
