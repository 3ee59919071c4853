package e2e

import (
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
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// Real servers for the rest of the catalogue. Each starts on an ephemeral
// 127.0.0.1 port, is killed with its process group at cleanup and never
// talks to another address.

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
	os.WriteFile(filepath.Join(dir, "kamailio.cfg"), []byte(cfg), 0o644)
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
	os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644)
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
	os.WriteFile(filepath.Join(dir, "xrdp.ini"), []byte(strings.Join(ini, "\n")), 0o644)
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
	os.WriteFile(filepath.Join(root, file), []byte(content), 0o644)
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

// openVPNPKI writes a CA and a server and a client certificate (ECDSA P-256)
// for OpenVPN's TLS mode into dir.
func openVPNPKI(t *testing.T, dir string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "protoplex test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	write := func(name, typ string, der []byte, mode os.FileMode) {
		os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
	}
	write("ca.crt", "CERTIFICATE", caDER, 0o644)
	for i, role := range []struct {
		name string
		use  x509.ExtKeyUsage
	}{{"server", x509.ExtKeyUsageServerAuth}, {"client", x509.ExtKeyUsageClientAuth}} {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: role.name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{role.use},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, _ := x509.MarshalPKCS8PrivateKey(key)
		write(role.name+".crt", "CERTIFICATE", der, 0o644)
		write(role.name+".key", "PRIVATE KEY", kb, 0o600)
	}
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

// isListening reads /proc/net/tcp: is 127.0.0.1:port in state LISTEN (0A)?
func isListening(port int) bool {
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return false
	}
	want := fmt.Sprintf("0100007F:%04X", port)
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && f[1] == want && f[3] == "0A" {
			return true
		}
	}
	return false
}
