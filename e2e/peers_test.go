package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// requireBinary skips (or, under PROTOPLEX_REQUIRE_PEERS=1 as in `make
// test`, fails) when a real peer is not installed.
func requireBinary(t testing.TB, path string) string {
	t.Helper()
	p, err := exec.LookPath(path)
	if err != nil {
		msg := fmt.Sprintf("%s not installed (run scripts/install-test-deps.sh)", path)
		if os.Getenv("PROTOPLEX_REQUIRE_PEERS") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

// daemon starts a real server process that the test owns: killed (with its
// process group) and reaped at cleanup, or earlier by the returned stop. It
// is ready once addr accepts a probe connection.
func daemon(t testing.TB, addr string, name string, args ...string) (stop func()) {
	t.Helper()
	p := testnet.StartProcess(t, exec.Command(name, args...))
	testnet.Eventually(t, 15*time.Second, func() bool { return testnet.Listening(addr) },
		"%s never accepted connections on %s; its output:\n%s", name, addr, p.Out)
	return p.Stop
}

// run runs a real client, bounded in time, and returns its combined output.
func run(t testing.TB, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := execCommand(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// loopbackPort returns a port for a real server to listen on (see
// testnet.FreePort) and its 127.0.0.1 address.
func loopbackPort(t testing.TB) (port int, addr string) {
	port = testnet.FreePort(t)
	return port, fmt.Sprintf("127.0.0.1:%d", port)
}

func startRedis(t testing.TB) string {
	t.Helper()
	addr, _ := startRedisOn(t, testnet.FreePort(t))
	return addr
}

// startRedisOn runs redis-server on port; stop kills it.
func startRedisOn(t testing.TB, port int) (addr string, stop func()) {
	t.Helper()
	bin := requireBinary(t, "redis-server")
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	stop = daemon(t, addr, bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	return addr, stop
}

// startSSHD runs a throwaway sshd with generated host and client keys; it
// returns the address and the ssh client arguments that log in as root.
func startSSHD(t testing.TB) (string, []string) {
	t.Helper()
	sshd := requireBinary(t, "/usr/sbin/sshd")
	keygen := requireBinary(t, "ssh-keygen")
	dir := t.TempDir()
	for _, k := range []string{"host", "client"} {
		if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v %s", err, out)
		}
	}
	pub, _ := os.ReadFile(filepath.Join(dir, "client.pub"))
	os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600)
	os.MkdirAll("/run/sshd", 0o755)
	port := testnet.FreePort(t)
	cfg := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s/host
AuthorizedKeysFile %s/authorized_keys
PidFile %s/sshd.pid
UsePAM no
StrictModes no
PermitRootLogin yes
PasswordAuthentication no
`, port, dir, dir, dir)
	os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(cfg), 0o600)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	daemon(t, addr, sshd, "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	return addr, []string{"-i", filepath.Join(dir, "client"), "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR"}
}

// startNginx serves body over HTTP, or over TLS with a certificate for name
// when name is not empty.
func startNginx(t testing.TB, body, name string) string {
	return startNginxWith(t, body, name, "")
}

// startNginxWith adds listen parameters (e.g. "proxy_protocol"); body may use
// nginx variables.
func startNginxWith(t testing.TB, body, name, listenParams string) string {
	t.Helper()
	bin := requireBinary(t, "nginx")
	dir := t.TempDir()
	port := testnet.FreePort(t)
	listen := fmt.Sprintf("listen 127.0.0.1:%d %s;", port, listenParams)
	tls := ""
	if name != "" {
		cert, key := selfSigned(t, dir, name)
		listen = fmt.Sprintf("listen 127.0.0.1:%d ssl %s;", port, listenParams)
		tls = fmt.Sprintf("ssl_certificate %s; ssl_certificate_key %s;", cert, key)
	}
	conf := fmt.Sprintf(`daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
worker_processes 1;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path %[1]s/body; proxy_temp_path %[1]s/proxy; fastcgi_temp_path %[1]s/fcgi;
  uwsgi_temp_path %[1]s/uwsgi; scgi_temp_path %[1]s/scgi;
  server {
    %[2]s
    %[3]s
    location / { default_type text/plain; return 200 "%[4]s"; }
  }
}
`, dir, listen, tls, body)
	os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	daemon(t, addr, bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"))
	return addr
}

// selfSigned writes a certificate for name and its key into dir.
func selfSigned(t testing.TB, dir, name string) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certPath, keyPath = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certPath, keyPath
}

func execCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = time.Second
	return cmd
}
