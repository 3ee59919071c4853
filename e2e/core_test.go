// Package e2e drives real clients through a running protoplex to real
// servers (Debian's packages: scripts/install-test-deps.sh), all on
// 127.0.0.1. It runs on Linux only: the peers, /proc/net/tcp and the
// 127.0.0.0/8 source addresses it dials from are Linux's.
package e2e

import (
	"cmp"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/darkit/protoplex"
	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/protocols"
)

func TestMain(m *testing.M) {
	if runtime.GOOS != "linux" {
		fmt.Println("e2e: skipped, the real peers and /proc/net/tcp need Linux")
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// startMux runs a protoplex manager with protos on an ephemeral port.
func startMux(t testing.TB, protos ...*protocols.Protocol) (string, *protoplex.ProtocolManager) {
	t.Helper()
	return startMuxWith(t, nil, protos...)
}

// startMuxWith is startMux with opts applied after the tests' defaults (no
// logging, a 2 s graceful shutdown).
func startMuxWith(t testing.TB, opts []protoplex.Option, protos ...*protocols.Protocol) (string, *protoplex.ProtocolManager) {
	t.Helper()
	pm := protoplex.NewProtocolManager(append([]protoplex.Option{protoplex.WithLogger(slog.New(slog.DiscardHandler)),
		protoplex.WithGracefulShutdownTimeout(2 * time.Second), testDataPlane()}, opts...)...)
	for _, p := range protos {
		if err := pm.AddProtocol(p); err != nil {
			t.Fatal(err)
		}
	}
	return serve(t, pm), pm
}

// serve runs pm on an ephemeral loopback port until the test ends, then
// closes it. See serveOn.
func serve(t testing.TB, pm *protoplex.ProtocolManager) string {
	t.Helper()
	return serveOn(t, testnet.Listen(t), pm)
}

// serveOn runs pm on ln until the test ends, then closes it; an error
// Serve returns fails the test.
func serveOn(t testing.TB, ln net.Listener, pm *protoplex.ProtocolManager) string {
	t.Helper()
	t.Cleanup(func() { pm.Close() })
	return testnet.StartOn(t, ln, pm.Serve)
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// TestCoreRealClients: curl → nginx, ssh → sshd, redis-cli → redis-server and
// openssl s_client routed by SNI to two different TLS servers, all through
// one protoplex port.
func TestCoreRealClients(t *testing.T) {
	web := startNginx(t, "hello from nginx", "")
	tlsA := startNginx(t, "tls backend A", "a.example")
	tlsB := startNginx(t, "tls backend B", "b.example")
	redis := startRedis(t)
	sshd, sshArgs := startSSHD(t)

	routeA := protocols.NewTLSProtocol(tlsA)
	routeA.SNI = []string{"a.example"}
	addr, pm := startMux(t,
		protocols.NewHTTPProtocol(web),
		protocols.NewSSHProtocol(sshd),
		protocols.NewRedisProtocol(redis),
		routeA,
		protocols.NewTLSProtocol(tlsB), // every other TLS client
	)

	t.Run("curl", func(t *testing.T) {
		out, err := run(t, 20*time.Second, requireBinary(t, "curl"), "-sS", "http://"+addr+"/")
		if err != nil || out != "hello from nginx" {
			t.Fatalf("%v: %q", err, out)
		}
	})
	t.Run("ssh", func(t *testing.T) {
		args := append(sshArgs, "-p", port(addr), "root@127.0.0.1", "echo", "via-protoplex")
		out, err := run(t, 30*time.Second, requireBinary(t, "ssh"), args...)
		if err != nil || strings.TrimSpace(out) != "via-protoplex" {
			t.Fatalf("%v: %q", err, out)
		}
	})
	t.Run("redis-cli", func(t *testing.T) {
		cli := requireBinary(t, "redis-cli")
		if out, err := run(t, 20*time.Second, cli, "-h", "127.0.0.1", "-p", port(addr), "set", "k", "v42"); err != nil || strings.TrimSpace(out) != "OK" {
			t.Fatalf("set: %v: %q", err, out)
		}
		out, err := run(t, 20*time.Second, cli, "-h", "127.0.0.1", "-p", port(addr), "get", "k")
		if err != nil || strings.TrimSpace(out) != "v42" {
			t.Fatalf("get: %v: %q", err, out)
		}
	})
	t.Run("openssl-sni", func(t *testing.T) {
		openssl := requireBinary(t, "openssl")
		for _, c := range []struct{ sni, want string }{{"a.example", "tls backend A"}, {"b.example", "tls backend B"}, {"other.test", "tls backend B"}} {
			out, err := runStdin(t, 20*time.Second, "GET / HTTP/1.0\r\nHost: "+c.sni+"\r\n\r\n",
				openssl, "s_client", "-connect", addr, "-servername", c.sni, "-quiet", "-verify_quiet")
			if err != nil && !strings.Contains(out, c.want) {
				t.Fatalf("%s: %v: %q", c.sni, err, out)
			}
			if !strings.Contains(out, c.want) {
				t.Fatalf("SNI %s: want %q, got %q", c.sni, c.want, out)
			}
		}
	})
	m := pm.GetMetrics()
	for _, name := range []string{"HTTP", "SSH", "Redis", "TLS"} {
		if m.Identified[name] == 0 {
			t.Errorf("no %s connection identified: %v", name, m.Identified)
		}
	}
}

// testDataPlane is the data plane the suite runs on: the event loops, or
// with PROTOPLEX_TEST_DATA_PLANE=goroutines (make unit runs both) the
// goroutine per connection.
func testDataPlane() protoplex.Option {
	return protoplex.WithDataPlane(cmp.Or(os.Getenv("PROTOPLEX_TEST_DATA_PLANE"), "events"), 0)
}
