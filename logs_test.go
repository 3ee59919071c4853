package protoplex

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/routing"
	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/protocols"
)

// textLogger returns a text logger at INFO writing to the returned buffer.
func textLogger() (*slog.Logger, *testnet.Buffer) {
	buf := &testnet.Buffer{}
	return slog.New(slog.NewTextHandler(buf, nil)), buf
}

// applyYAML parses a configuration and applies it to pm.
func applyYAML(t *testing.T, pm *ProtocolManager, yaml string) {
	t.Helper()
	cfg, err := ParseConfig([]byte(yaml), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := pm.UpdateConfig(cfg); err != nil {
		t.Fatal(err)
	}
}

// logLines returns the lines of buf containing every one of parts.
func logLines(buf *testnet.Buffer, parts ...string) []string {
	var out []string
	for _, l := range strings.Split(buf.String(), "\n") {
		ok := l != ""
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

// waitLog waits for a line of buf containing every one of parts.
func waitLog(t *testing.T, buf *testnet.Buffer, parts ...string) string {
	t.Helper()
	var line string
	testnet.Eventually(t, 10*time.Second, func() bool {
		l := logLines(buf, parts...)
		if len(l) > 0 {
			line = l[0]
		}
		return line != ""
	}, "no log line with %q in:\n%v", parts, testnet.Later(buf.String))
	return line
}

// TestDeadBackendLogged: at the default level a dead backend is not
// silent: failed dials log at WARN with protocol, target and error, a few
// lines a second however many clients fail.
func TestDeadBackendLogged(t *testing.T) {
	log, buf := textLogger()
	pm := NewProtocolManager(WithLogger(log))
	if err := pm.AddProtocol(protocols.NewSSHProtocol("127.0.0.1:1")); err != nil { // refuses
		t.Fatal(err)
	}
	addr := serveTest(t, pm)
	start := time.Now()
	const clients = 30
	for range clients {
		roundTrip(t, addr, "SSH-2.0-x\r\n")
	}
	elapsed := time.Since(start)
	line := `level=WARN msg="backend dial failed" protocol=SSH route=SSH target=127.0.0.1:1 err=`
	waitLog(t, buf, line)
	// Each second may write its budget; the loop ran in elapsed.
	if n, most := len(logLines(buf, line)), routing.DialLogsPerSecond*(int(elapsed/time.Second)+2); n > most || n >= clients {
		t.Fatalf("%d lines for %d failed dials in %v, want at most %d:\n%s", n, clients, elapsed, most, buf.String())
	}
}

// TestHealthTransitionsLogged: a target the active checks find down logs
// at WARN, back up at INFO, with protocol and target.
func TestHealthTransitionsLogged(t *testing.T) {
	ln := testnet.Listen(t)
	backend := testnet.ServeOn(t, ln, func(net.Conn) {})
	log, buf := textLogger()
	pm := NewProtocolManager(WithLogger(log))
	defer pm.Close()
	p := protocols.NewSSHProtocol(backend)
	p.Health = protocols.HealthConfig{Interval: 10 * time.Millisecond, Rise: 1, Fall: 1}
	if err := pm.AddProtocol(p); err != nil {
		t.Fatal(err)
	}
	ln.Close()
	waitLog(t, buf, `level=WARN msg="backend down: health checks fail" protocol=SSH route=SSH target=`+backend)
	again, err := net.Listen("tcp", backend)
	if err != nil {
		t.Skipf("port %s taken by another process meanwhile: %v", backend, err)
	}
	testnet.ServeOn(t, again, func(net.Conn) {})
	waitLog(t, buf, `level=INFO msg="backend up: health checks pass" protocol=SSH route=SSH target=`+backend)
}

// TestMaxConnectionsRefusalLogged: refusals over the cap log at WARN, rate
// limited, and each has its access line.
func TestMaxConnectionsRefusalLogged(t *testing.T) {
	log, buf := textLogger()
	pm := NewProtocolManager(WithLogger(log))
	applyYAML(t, pm, fmt.Sprintf("server:\n  max_connections: 1\n  access_log: true\nprotocols:\n  - name: SSH\n    target: %q\n", testnet.Banner(t, "x")))
	addr := serveTest(t, pm)
	held, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	waitFor(t, func() bool { return pm.GetMetrics().ActiveConnections == 1 })
	const refused = 5
	for range refused {
		roundTrip(t, addr, "SSH-2.0-x\r\n")
	}
	waitFor(t, func() bool { return len(logLines(buf, "close=refused reason=max_connections")) == refused })
	if n := len(logLines(buf, `level=WARN msg="connection refused: max_connections reached" max_connections=1`)); n < 1 || n > 2 {
		t.Fatalf("%d warnings for %d refusals within a second or two, want 1 or 2:\n%s", n, refused, buf.String())
	}
}

// TestReloadLogsChanges: an applied configuration logs at INFO the routes
// it added, removed and changed, or that no route or listener changed.
func TestReloadLogsChanges(t *testing.T) {
	log, buf := textLogger()
	pm := NewProtocolManager(WithLogger(log))
	defer pm.Close()
	const tls = "  - name: TLS\n    sni: [a.example]\n    target: 127.0.0.1:8443\n"
	applyYAML(t, pm, "protocols:\n  - name: SSH\n    target: 127.0.0.1:22\n"+tls)
	waitLog(t, buf, `level=INFO msg="configuration applied" routes_added="[SSH->127.0.0.1:22 TLS[sni=a.example]->127.0.0.1:8443]"`)
	applyYAML(t, pm, "protocols:\n  - name: SSH\n    target: 127.0.0.1:2222\n  - name: Redis\n    target: 127.0.0.1:6379\n")
	waitLog(t, buf, `level=INFO msg="configuration applied" routes_added=[Redis->127.0.0.1:6379] routes_removed="[TLS[sni=a.example]->127.0.0.1:8443]" routes_changed="[SSH->127.0.0.1:2222 (was 127.0.0.1:22)]"`)
	applyYAML(t, pm, "server:\n  idle_timeout: 1h\nprotocols:\n  - name: SSH\n    target: 127.0.0.1:2222\n  - name: Redis\n    target: 127.0.0.1:6379\n")
	waitLog(t, buf, `level=INFO msg="configuration applied, no route or listener changed"`)
}

// accessConfig routes SSH, TLS for a.example, HTTP and Redis (to a port that
// refuses), with or without the access log.
func accessConfig(t *testing.T, accessLog bool) string {
	hello := helloBackend(t)
	return fmt.Sprintf(`server:
  access_log: %v
protocols:
  - name: SSH
    target: %q
  - name: TLS
    sni: [a.example]
    target: %q
  - name: HTTP
    target: %q
  - name: Redis
    target: 127.0.0.1:1
`, accessLog, testnet.Banner(t, "ssh:"), hello, testnet.Banner(t, "http:"))
}

// chromiumHello is a Chromium ClientHello for a.example with ALPN h2 and
// http/1.1.
func chromiumHello(t *testing.T) string {
	t.Helper()
	hello, err := os.ReadFile("protocols/testdata/flights/tls-chromium.bin")
	if err != nil {
		t.Fatal(err)
	}
	return string(hello)
}

// helloBackend reads whatever comes and answers "tls".
func helloBackend(t *testing.T) string {
	return testnet.Serve(t, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 4096)
		c.Read(buf)
		io.WriteString(c, "tls")
	})
}

// TestAccessLog: with server.access_log every connection ends in one INFO
// line with what is known of it, in text with a readable duration and in
// JSON with seconds; a reload turns it off.
func TestAccessLog(t *testing.T) {
	log, buf := textLogger()
	pm := NewProtocolManager(WithLogger(log))
	applyYAML(t, pm, accessConfig(t, true))
	addr := serveTest(t, pm)

	roundTrip(t, addr, "SSH-2.0-x\r\n")
	ssh := waitLog(t, buf, `level=INFO msg="connection closed" client=127.0.0.1:`, " protocol=SSH route=SSH target=")
	if !strings.Contains(ssh, " up=11 down=15 duration=") || !strings.HasSuffix(ssh, " close=done") {
		t.Errorf("ssh line: %s", ssh)
	}
	if d := ssh[strings.Index(ssh, "duration=")+len("duration="):]; !strings.ContainsAny(d[:strings.IndexByte(d, ' ')], "µmns") {
		t.Errorf("duration not a Go duration in text: %s", ssh)
	}
	if got := roundTrip(t, addr, chromiumHello(t)); got != "tls" {
		t.Fatalf("tls: %q", got)
	}
	waitLog(t, buf, `protocol=TLS route="TLS[sni=a.example]" sni=a.example alpn=h2,http/1.1 target=`)
	roundTrip(t, addr, "GET / HTTP/1.1\r\nHost: www.example:8080\r\n\r\n")
	waitLog(t, buf, "protocol=HTTP route=HTTP host=www.example target=")
	roundTrip(t, addr, "PING\r\n")
	waitLog(t, buf, "protocol=Redis route=Redis up=6 down=0 duration=", ` close=dial_error err="dial tcp 127.0.0.1:1: connect: connection refused"`)
	roundTrip(t, addr, "\x00garbage\r\n")
	waitLog(t, buf, "up=10 down=0 duration=", " close=unidentified reason=no_match")

	applyYAML(t, pm, accessConfig(t, false))
	before := len(logLines(buf, "connection closed"))
	roundTrip(t, addr, "SSH-2.0-x\r\n")
	roundTrip(t, addr, "\x00garbage\r\n")
	waitFor(t, func() bool { return pm.GetMetrics().Identified["SSH"] == 2 && pm.GetMetrics().ActiveConnections == 0 })
	if n := len(logLines(buf, "connection closed")); n != before {
		t.Fatalf("access log off after the reload, yet %d more lines:\n%s", n-before, buf.String())
	}
}

// TestAccessLogJSON: the JSON line carries the same attributes, the
// duration in seconds as a number.
func TestAccessLogJSON(t *testing.T) {
	buf := &testnet.Buffer{}
	pm := NewProtocolManager(WithLogger(slog.New(slog.NewJSONHandler(buf, nil))))
	applyYAML(t, pm, accessConfig(t, true))
	addr := serveTest(t, pm)
	if got := roundTrip(t, addr, chromiumHello(t)); got != "tls" {
		t.Fatalf("tls: %q", got)
	}
	line := waitLog(t, buf, `"msg":"connection closed"`, `"protocol":"TLS"`)
	var rec map[string]any
	if err := json.Unmarshal([]byte(line), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["level"] != "INFO" || rec["route"] != "TLS[sni=a.example]" || rec["sni"] != "a.example" || rec["alpn"] != "h2,http/1.1" ||
		rec["up"] != float64(len(chromiumHello(t))) || rec["down"] != 3.0 || rec["close"] != "done" || rec["target"] == nil {
		t.Errorf("json line: %s", line)
	}
	if d, ok := rec["duration"].(float64); !ok || d <= 0 || d > 10 {
		t.Errorf("duration %v (%T), want seconds as a number: %s", rec["duration"], rec["duration"], line)
	}
}

// TestFallbackIsNotAFailure: a connection the fallback route takes is
// normal traffic: not an identification failure, and it does not feed the
// DDoS guard (a threshold of 1 would ban the second client).
func TestFallbackIsNotAFailure(t *testing.T) {
	pm := NewProtocolManager(WithLogger(discardLogger()))
	applyYAML(t, pm, fmt.Sprintf(`security:
  enable_ddos_guard: true
  ddos_guard: {failure_threshold: 1, window: 1m, ban_duration: 1m}
protocols:
  - name: SSH
    target: %q
  - name: HTTP
    target: %q
    fallback: true
`, testnet.Banner(t, "ssh:"), testnet.Banner(t, "web:")))
	addr := serveTest(t, pm)
	for i := range 3 {
		if got := roundTrip(t, addr, "\x00garbage\r\n"); got != "web:\x00garbage\r\n" {
			t.Fatalf("client %d: %q", i, got)
		}
	}
	m := scrape(t, pm)
	for k, v := range m {
		if strings.HasPrefix(k, "protoplex_identify_failures_total") && v != 0 {
			t.Errorf("%s = %v", k, v)
		}
	}
	if m["protoplex_identified_total{protocol=HTTP,route=HTTP}"] != 3 {
		t.Errorf("fallback connections identified: %v", m["protoplex_identified_total{protocol=HTTP,route=HTTP}"])
	}
}

// TestBackendUpFollowsReloads: a reload that removes a route or a target
// removes its backend_up series; a target another route of the same
// protocol still checks keeps its, under that route.
func TestBackendUpFollowsReloads(t *testing.T) {
	pm := NewProtocolManager(WithLogger(discardLogger()))
	defer pm.Close()
	const checks = "    health_check: {interval: 1h}\n" // one check at the start: up until 3 fail
	const tlsB = "  - name: TLS\n    sni: [b.example]\n    target: 127.0.0.1:9444\n" + checks
	applyYAML(t, pm, "protocols:\n  - name: TLS\n    sni: [a.example]\n    target: [127.0.0.1:9443, 127.0.0.1:9444]\n"+checks+tlsB+"  - name: Redis\n    target: 127.0.0.1:6379\n"+checks)
	series := func() []string {
		var out []string
		for k := range scrape(t, pm) {
			if strings.HasPrefix(k, "protoplex_backend_up") {
				out = append(out, k)
			}
		}
		return out
	}
	if got := series(); len(got) != 4 {
		t.Fatalf("backend_up series: %v", got)
	}
	applyYAML(t, pm, "protocols:\n  - name: TLS\n    sni: [a.example]\n    target: 127.0.0.1:9443\n"+checks+tlsB)
	got := scrape(t, pm)
	if _, ok := got["protoplex_backend_up{protocol=Redis,route=Redis,target=127.0.0.1:6379}"]; ok {
		t.Error("the removed route's series stayed")
	}
	if _, ok := got["protoplex_backend_up{protocol=TLS,route=TLS[sni=a.example],target=127.0.0.1:9444}"]; ok {
		t.Error("the target the a.example route dropped kept its series")
	}
	if _, ok := got["protoplex_backend_up{protocol=TLS,route=TLS[sni=b.example],target=127.0.0.1:9444}"]; !ok {
		t.Error("a target the b.example route still checks lost its series")
	}
	if n := len(series()); n != 2 {
		t.Errorf("backend_up series: %v", series())
	}
}
