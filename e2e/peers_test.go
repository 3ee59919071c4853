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
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// The real peers: servers the tests run (each on a 127.0.0.1 port, killed
// with its process group at cleanup, talking to no other address) and the
// runners of real clients.

// requireBinary is testnet.RequireBinary: the path of a real peer's
// program, or the test skipped (failed under make test) without it.
func requireBinary(t testing.TB, path string) string {
	t.Helper()
	return testnet.RequireBinary(t, path)
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

// startProcess starts cmd, a server that takes a single client (a probe
// connection would consume it) or runs as another user: it is ready once
// the kernel lists port as listening on 127.0.0.1.
func startProcess(t *testing.T, port int, cmd *exec.Cmd) *testnet.Process {
	t.Helper()
	p := testnet.StartProcess(t, cmd)
	testnet.Eventually(t, 15*time.Second, func() bool {
		select {
		case <-p.Exited():
			t.Fatalf("%s exited before listening:\n%s", cmd.Path, p.Out)
		default:
		}
		return isListening(port)
	}, "%s never listened on %d:\n%s", cmd.Path, port, p.Out)
	return p
}

// isListening says whether the kernel lists 127.0.0.1:port as listening.
func isListening(port int) bool {
	want := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	found := false
	testnet.EachTCPSocket(func(s testnet.Socket) {
		found = found || (s.State == testnet.StateListen && s.Local == want)
	})
	return found
}

// run runs a real client, bounded in time, and returns its combined output.
func run(t testing.TB, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	return runStdin(t, timeout, "", name, args...)
}

// runStdin is run with stdin as the client's standard input (none, that
// is /dev/null, when empty). When timeout passes the client is killed, and
// its output pipes are given a second more to close (a child it left may
// hold them).
func runStdin(t testing.TB, timeout time.Duration, stdin, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = time.Second
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// runUntil runs a client until its output contains marker, then kills it;
// the test fails when the client exits first or timeout passes.
func runUntil(t *testing.T, timeout time.Duration, marker string, name string, args ...string) {
	t.Helper()
	p := testnet.StartProcess(t, exec.Command(name, args...))
	defer p.Stop()
	testnet.Eventually(t, timeout, func() bool {
		if strings.Contains(p.Out.String(), marker) {
			return true
		}
		select {
		case <-p.Exited():
			t.Fatalf("%s exited without printing %q:\n%s", filepath.Base(name), marker, p.Out)
		default:
		}
		return false
	}, "%s never printed %q:\n%s", filepath.Base(name), marker, p.Out)
}

// loopbackPort returns a port for a real server to listen on (see
// testnet.FreePort) and its 127.0.0.1 address.
func loopbackPort(t testing.TB) (port int, addr string) {
	port = testnet.FreePort(t)
	return port, fmt.Sprintf("127.0.0.1:%d", port)
}

// startRedis runs redis-server without persistence.
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
	port, addr := loopbackPort(t)
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
	_, addr := loopbackPort(t)
	listen := fmt.Sprintf("listen %s %s;", addr, listenParams)
	tls := ""
	if name != "" {
		cert, key := selfSigned(t, dir, name)
		listen = fmt.Sprintf("listen %s ssl %s;", addr, listenParams)
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
	testnet.WriteFile(t, filepath.Join(dir, "nginx.conf"), conf)
	daemon(t, addr, bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"))
	return addr
}

// selfSigned writes a self-signed certificate for name and its key into dir.
func selfSigned(t testing.TB, dir, name string) (certPath, keyPath string) {
	t.Helper()
	writeCert(t, dir, name, &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
	}, nil, nil)
	return filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
}

// openVPNPKI writes a CA and a server and a client certificate for OpenVPN's
// TLS mode into dir.
func openVPNPKI(t *testing.T, dir string) {
	t.Helper()
	ca, caKey := writeCert(t, dir, "ca", &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "protoplex test CA"},
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil, nil)
	for i, role := range []struct {
		name string
		use  x509.ExtKeyUsage
	}{{"server", x509.ExtKeyUsageServerAuth}, {"client", x509.ExtKeyUsageClientAuth}} {
		writeCert(t, dir, role.name, &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: role.name},
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{role.use},
		}, ca, caKey)
	}
}

// writeCert issues tmpl, valid from an hour ago for a day, for a new ECDSA
// P-256 key, signed by parentKey (self-signed when parent is nil), and
// writes dir/name.crt and dir/name.key (PKCS #8, mode 0600).
func writeCert(t testing.TB, dir, name string, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	testnet.WriteFile(t, filepath.Join(dir, name+".crt"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	if err := os.WriteFile(filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// startMosquitto runs an MQTT broker that takes anonymous clients.
func startMosquitto(t *testing.T) string {
	t.Helper()
	bin := requireBinary(t, "/usr/sbin/mosquitto")
	port, addr := loopbackPort(t)
	conf := filepath.Join(t.TempDir(), "mosquitto.conf")
	testnet.WriteFile(t, conf, fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n", port))
	daemon(t, addr, bin, "-c", conf)
	return addr
}

// startMicrosocks runs a SOCKS5 server.
func startMicrosocks(t *testing.T) string {
	t.Helper()
	bin := requireBinary(t, "microsocks")
	port, addr := loopbackPort(t)
	daemon(t, addr, bin, "-i", "127.0.0.1", "-p", fmt.Sprint(port))
	return addr
}

// startDnsmasq answers example.test A 192.0.2.7 from its own table (no
// upstream, no /etc/hosts), over UDP and TCP.
func startDnsmasq(t *testing.T) string {
	t.Helper()
	bin := requireBinary(t, "/usr/sbin/dnsmasq")
	port, addr := loopbackPort(t)
	daemon(t, addr, bin, "-k", "-C", "/dev/null", "--port="+strconv.Itoa(port), "--listen-address=127.0.0.1",
		"--bind-interfaces", "--no-resolv", "--no-hosts", "--pid-file=", "--user=root",
		"--log-facility=-", "--address=/example.test/192.0.2.7")
	return addr
}

// startTurnserver runs coturn with STUN and TURN over TCP and a loopback relay.
func startTurnserver(t *testing.T) string {
	t.Helper()
	bin := requireBinary(t, "turnserver")
	dir := t.TempDir()
	port, addr := loopbackPort(t)
	daemon(t, addr, bin, "-n", "--listening-ip", "127.0.0.1", "--listening-port", strconv.Itoa(port),
		"--relay-ip", "127.0.0.1", "--no-auth", "--no-tls", "--no-dtls", "--no-rfc5780", "--no-cli",
		"--allow-loopback-peers", "--pidfile", filepath.Join(dir, "pid"), "--db", filepath.Join(dir, "turndb"),
		"--log-file", "stdout", "--simple-log")
	return addr
}

// startKamailio runs a stateless SIP endpoint over TCP that answers every
// request with "200 OK from kamailio".
func startKamailio(t *testing.T) string {
	t.Helper()
	bin := requireBinary(t, "kamailio")
	dir := t.TempDir()
	_, addr := loopbackPort(t)
	cfg := fmt.Sprintf(`#!KAMAILIO
debug=2
log_stderror=yes
children=1
tcp_children=1
auto_aliases=no
listen=tcp:%s
loadmodule "sl.so"
request_route {
	sl_send_reply("200", "OK from kamailio");
}
`, addr)
	testnet.WriteFile(t, filepath.Join(dir, "kamailio.cfg"), cfg)
	daemon(t, addr, bin, "-DD", "-E", "-f", filepath.Join(dir, "kamailio.cfg"), "-P", filepath.Join(dir, "pid"), "-Y", dir)
	return addr
}

// startNginxRTMP runs nginx with libnginx-mod-rtmp: application "live".
func startNginxRTMP(t *testing.T) string {
	t.Helper()
	bin := requireBinary(t, "nginx")
	const module = "/usr/lib/nginx/modules/ngx_rtmp_module.so"
	if _, err := os.Stat(module); err != nil {
		requireBinary(t, module) // skips or fails with the installer hint
	}
	dir := t.TempDir()
	_, addr := loopbackPort(t)
	conf := fmt.Sprintf(`load_module %s;
daemon off;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log;
worker_processes 1;
events { worker_connections 64; }
rtmp { server { listen %[3]s; application live { live on; record off; } } }
`, module, dir, addr)
	testnet.WriteFile(t, filepath.Join(dir, "nginx.conf"), conf)
	daemon(t, addr, bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"))
	return addr
}

// startXRDP runs xrdp in the foreground with its own log file.
func startXRDP(t *testing.T) (addr, logPath string) {
	t.Helper()
	bin := requireBinary(t, "xrdp")
	dir := t.TempDir()
	_, addr = loopbackPort(t)
	logPath = filepath.Join(dir, "xrdp.log")
	base, err := os.ReadFile("/etc/xrdp/xrdp.ini")
	if err != nil {
		t.Fatal(err)
	}
	var ini []string
	for _, line := range strings.Split(string(base), "\n") {
		switch {
		case strings.HasPrefix(line, "port="):
			line = "port=tcp://" + addr
		case strings.HasPrefix(line, "LogFile="):
			line = "LogFile=" + logPath
		case strings.HasPrefix(line, "EnableSyslog="):
			line = "EnableSyslog=false"
		}
		ini = append(ini, line)
	}
	testnet.WriteFile(t, filepath.Join(dir, "xrdp.ini"), strings.Join(ini, "\n"))
	os.MkdirAll("/run/xrdp/sockdir", 0o755)
	daemon(t, addr, bin, "-n", "-c", filepath.Join(dir, "xrdp.ini"))
	return addr, logPath
}

// startVsftpd serves one file to anonymous users.
func startVsftpd(t *testing.T, file, content string) string {
	t.Helper()
	bin := requireBinary(t, "/usr/sbin/vsftpd")
	dir := t.TempDir()
	root, empty := filepath.Join(dir, "root"), filepath.Join(dir, "empty")
	os.MkdirAll(root, 0o755)
	os.MkdirAll(empty, 0o755)
	os.Chmod(root, 0o755) // read by the unprivileged ftp user after chroot
	testnet.WriteFile(t, filepath.Join(root, file), content)
	port, addr := loopbackPort(t)
	conf := fmt.Sprintf(`listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port=%d
background=NO
anonymous_enable=YES
anon_root=%s
no_anon_password=YES
local_enable=NO
write_enable=NO
pasv_enable=YES
pasv_address=127.0.0.1
seccomp_sandbox=NO
secure_chroot_dir=%s
xferlog_enable=NO
vsftpd_log_file=%s/vsftpd.log
`, port, root, empty, dir)
	os.WriteFile(filepath.Join(dir, "vsftpd.conf"), []byte(conf), 0o600)
	daemon(t, addr, bin, filepath.Join(dir, "vsftpd.conf"))
	return addr
}

// startSSHSocks runs OpenSSH's dynamic forwarding (ssh -D) against a
// throwaway sshd: the SOCKS4, SOCKS4a and SOCKS5 server many people use.
// (Debian's dante 1.4 has no SOCKS4a: it connects to 0.0.0.1.)
func startSSHSocks(t *testing.T) string {
	t.Helper()
	sshdAddr, args := startSSHD(t)
	ssh := requireBinary(t, "ssh")
	_, addr := loopbackPort(t)
	args = append(args, "-N", "-D", addr, "-p", sshdAddr[strings.LastIndexByte(sshdAddr, ':')+1:], "root@127.0.0.1")
	daemon(t, addr, ssh, args...)
	return addr
}

// startOpenVPN runs an OpenVPN server in point-to-point TLS mode over TCP with
// the null device (no tun needed). It serves one client at a time, so
// readiness is read from the kernel's socket table instead of a probe
// connection, which it would take as its client.
func startOpenVPN(t *testing.T, pki string) string {
	t.Helper()
	bin := requireBinary(t, "/usr/sbin/openvpn")
	port, addr := loopbackPort(t)
	startProcess(t, port, exec.Command(bin, "--dev", "null", "--proto", "tcp-server", "--local", "127.0.0.1", "--lport", strconv.Itoa(port),
		"--tls-server", "--dh", "none", "--ca", filepath.Join(pki, "ca.crt"), "--cert", filepath.Join(pki, "server.crt"),
		"--key", filepath.Join(pki, "server.key"), "--verb", "3"))
	return addr
}
