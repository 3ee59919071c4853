package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// TestDTLSBySNI: two DTLS servers (openssl s_server -dtls, each with its
// own certificate) behind one protoplex UDP port, routed by the SNI of the
// DTLS ClientHello. openssl s_client -dtls with -servername completes its
// handshake with the server of that name (the certificate it got says so)
// and its line reaches that server. The route for b.example comes first,
// so a flow does not just take the first DTLS route. b's server answers
// the first ClientHello with a cookie (HelloVerifyRequest, s_server
// -listen), so its flow's second ClientHello follows the route the first
// one chose; that server serves one client only, so b is asked once.
func TestDTLSBySNI(t *testing.T) {
	openssl := requireBinary(t, "openssl")
	dir := t.TempDir()
	a := startDTLSServer(t, openssl, dir, "a.example", false)
	b := startDTLSServer(t, openssl, dir, "b.example", true)
	addr, _ := startUDPMux(t, fmt.Sprintf("protocols:\n"+
		"  - name: dtls\n    sni: b.example\n    target: %q\n"+
		"  - name: dtls\n    sni: a.example\n    target: %q\n", b.addr, a.addr))
	for _, s := range []*dtlsServer{a, b, a} {
		line := fmt.Sprintf("hello %s %d", s.name, time.Now().UnixNano())
		out, err := runStdin(t, 30*time.Second, line+"\n", openssl, "s_client", "-dtls", "-connect", addr, "-servername", s.name)
		if err != nil || !strings.Contains(out, "subject=CN = "+s.name) || !strings.Contains(out, "Protocol  : DTLSv1.2") {
			t.Fatalf("s_client -servername %s through %s: %v\n%s", s.name, addr, err, out)
		}
		testnet.Eventually(t, 10*time.Second, func() bool { return strings.Contains(s.p.Out.String(), line) },
			"the line of the client for %s never reached its server; its output:\n%s", s.name, s.p.Out)
	}
}

type dtlsServer struct {
	name, addr string
	p          *testnet.Process
}

// startDTLSServer runs openssl s_server -dtls on a free UDP port of
// 127.0.0.1 with a self-signed certificate for name, with cookie exchange
// when cookie; it prints what clients send. Its standard input stays open until the test ends (at
// end of input it would stop).
func startDTLSServer(t *testing.T, openssl, dir, name string, cookie bool) *dtlsServer {
	t.Helper()
	cert, key := selfSigned(t, dir, name)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	_, addr := loopbackPort(t)
	args := []string{"s_server", "-dtls", "-accept", addr, "-cert", cert, "-key", key}
	if cookie {
		args = append(args, "-listen")
	}
	cmd := exec.Command(openssl, args...)
	cmd.Stdin = r
	p := testnet.StartProcess(t, cmd)
	testnet.Eventually(t, 15*time.Second, func() bool {
		if cookie {
			// With -listen, s_server serves only the first client that
			// comes: a probe would use it up. Ready when it holds the port.
			pc, err := net.ListenPacket("udp", addr)
			if err == nil {
				pc.Close()
			}
			return err != nil && strings.Contains(p.Out.String(), "ACCEPT")
		}
		out, _ := run(t, 10*time.Second, openssl, "s_client", "-dtls", "-connect", addr, "-servername", name)
		return strings.Contains(out, "subject=CN = "+name)
	}, "s_server -dtls for %s never answered on %s; its output:\n%s", name, addr, p.Out)
	return &dtlsServer{name: name, addr: addr, p: p}
}
