package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/protocols"
)

func startMosquitto(t *testing.T) string {
	t.Helper()
	bin := requireBinary(t, "/usr/sbin/mosquitto")
	dir := t.TempDir()
	port := testnet.FreePort(t)
	conf := filepath.Join(dir, "mosquitto.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n", port)), 0o644)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	daemon(t, addr, bin, "-c", conf)
	return addr
}

func startMicrosocks(t *testing.T) string {
	t.Helper()
	bin := requireBinary(t, "microsocks")
	port, addr := loopbackPort(t)
	daemon(t, addr, bin, "-i", "127.0.0.1", "-p", fmt.Sprint(port))
	return addr
}

// smtpSink is a minimal SMTP server: greeting first, then answers each
// command; it reports the recipient of the first message.
func smtpSink(t *testing.T) (string, <-chan string) {
	t.Helper()
	got := make(chan string, 1)
	addr := testnet.Serve(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		r := bufio.NewReader(c)
		fmt.Fprintf(c, "220 sink.test ESMTP\r\n")
		var rcpt string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			cmd := strings.ToUpper(strings.TrimSpace(line))
			switch {
			case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"):
				fmt.Fprintf(c, "250 sink.test\r\n")
			case strings.HasPrefix(cmd, "RCPT TO:"):
				rcpt = strings.TrimSpace(line[len("RCPT TO:"):])
				fmt.Fprintf(c, "250 ok\r\n")
			case cmd == "DATA":
				fmt.Fprintf(c, "354 go on\r\n")
				for {
					l, err := r.ReadString('\n')
					if err != nil || l == ".\r\n" {
						break
					}
				}
				fmt.Fprintf(c, "250 queued\r\n")
				select {
				case got <- rcpt:
				default: // only the first message is reported
				}
			case cmd == "QUIT":
				fmt.Fprintf(c, "221 bye\r\n")
				return
			default:
				fmt.Fprintf(c, "250 ok\r\n")
			}
		}
	})
	return addr, got
}

// TestCatalogueRealClients: mosquitto_pub (MQTT 3.1, 3.1.1, 5) →
// mosquitto, curl through SOCKS5 → microsocks → nginx, and
// swaks → an SMTP server chosen on the client's silence (server-first), all
// through one protoplex port alongside HTTP and SSH.
func TestCatalogueRealClients(t *testing.T) {
	mq := startMosquitto(t)
	socks := startMicrosocks(t)
	web := startNginx(t, "through socks", "")
	smtp, delivered := smtpSink(t)
	addr, pm := startMux(t,
		protocols.NewHTTPProtocol(web),
		protocols.NewSSHProtocol("127.0.0.1:1"),
		protocols.NewMQTTProtocol(mq),
		protocols.NewSOCKSProtocol(socks),
		protocols.NewSMTPProtocol(smtp),
	)
	t.Run("mosquitto_pub", func(t *testing.T) {
		pub := requireBinary(t, "mosquitto_pub")
		for _, v := range []string{"mqttv31", "mqttv311", "mqttv5"} {
			if out, err := run(t, 20*time.Second, pub, "-h", "127.0.0.1", "-p", port(addr), "-V", v, "-t", "t", "-m", "hi"); err != nil {
				t.Fatalf("%s: %v %s", v, err, out)
			}
		}
	})
	t.Run("curl-socks", func(t *testing.T) {
		curl := requireBinary(t, "curl")
		// microsocks speaks SOCKS5 only; SOCKS4/4a detection is tested on
		// curl's recorded flights (protocols/testdata/flights).
		for _, flag := range []string{"--socks5-hostname", "--socks5"} {
			out, err := run(t, 20*time.Second, curl, "-sS", flag, addr, "http://"+web+"/")
			if err != nil || out != "through socks" {
				t.Fatalf("%s: %v %q", flag, err, out)
			}
		}
	})
	t.Run("swaks", func(t *testing.T) {
		swaks := requireBinary(t, "swaks")
		out, err := run(t, 30*time.Second, swaks, "--server", "127.0.0.1", "--port", port(addr), "--to", "user@example.test", "--from", "me@example.test", "--timeout", "10")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		select {
		case rcpt := <-delivered:
			if !strings.Contains(rcpt, "user@example.test") {
				t.Fatalf("recipient %q", rcpt)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no message delivered")
		}
	})
	m := pm.GetMetrics()
	if m.Identified["MQTT"] != 3 || m.Identified["SOCKS"] != 2 || m.Identified["SMTP"] != 1 {
		t.Fatalf("identified: %v", m.Identified)
	}
}
