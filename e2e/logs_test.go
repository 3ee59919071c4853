package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// TestBinaryTellsTheOperator: the real binary, with log_format json and
// access_log on, writes a JSON access line per connection (duration in
// seconds), a WARN line for a dead backend, and the routes a reload of the
// file added.
func TestBinaryTellsTheOperator(t *testing.T) {
	bin := buildCLI(t)
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	ssh := testnet.Banner(t, "ssh:")
	config := func(extra string) string {
		return fmt.Sprintf(`server:
  listen: "127.0.0.1:0"
  log_format: json
  access_log: true
protocols:
  - name: SSH
    target: %q
  - name: Redis
    target: "127.0.0.1:1"
%smonitoring:
  metrics_port: 0
  health_check_port: 0
`, ssh, extra)
	}
	testnet.WriteFile(t, cfg, config(""))
	addr, p, banner := startCLI(t, bin, "-config", cfg, "-watch") // the edits below are applied as they are saved
	// With log_format json the banner is JSON too, one object per line.
	for _, line := range strings.Split(strings.TrimSpace(banner.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec["banner"] == nil {
			t.Errorf("banner line not JSON: %q (%v)", line, err)
		}
	}

	// record waits for a JSON line of the process's log with every
	// key/value of want and returns it.
	record := func(want map[string]any) map[string]any {
		t.Helper()
		var found map[string]any
		testnet.Eventually(t, 10*time.Second, func() bool {
			for _, line := range strings.Split(p.Out.String(), "\n") {
				var rec map[string]any
				if json.Unmarshal([]byte(line), &rec) != nil {
					continue
				}
				match := true
				for k, v := range want {
					match = match && fmt.Sprint(rec[k]) == fmt.Sprint(v)
				}
				if match {
					found = rec
					return true
				}
			}
			return false
		}, "no log record with %v in:\n%s", want, p.Out)
		return found
	}

	if got := exchangeWith(addr, "SSH-2.0-x\r\n"); got != "ssh:SSH-2.0-x\r\n" {
		t.Fatalf("ssh: %q", got)
	}
	rec := record(map[string]any{"msg": "connection closed", "level": "INFO", "protocol": "SSH", "route": "SSH", "target": ssh, "close": "done"})
	if d, ok := rec["duration"].(float64); !ok || d <= 0 || d > 10 {
		t.Errorf("duration %v (%T), want seconds as a number", rec["duration"], rec["duration"])
	}

	exchangeWith(addr, "PING\r\n")
	record(map[string]any{"msg": "backend dial failed", "level": "WARN", "protocol": "Redis", "target": "127.0.0.1:1"})
	record(map[string]any{"msg": "connection closed", "protocol": "Redis", "close": "dial_error"})

	testnet.WriteFile(t, cfg, config("  - name: HTTP\n    target: \"127.0.0.1:1\"\n"))
	record(map[string]any{"msg": "configuration applied", "level": "INFO", "routes_added": "[HTTP->127.0.0.1:1]"})

	// log_format and log_level follow a reload: text from now on, and at
	// warn the access lines stop.
	text := strings.Replace(config("  - name: HTTP\n    target: \"127.0.0.1:1\"\n"), "log_format: json", "log_format: text\n  log_level: warn", 1)
	testnet.WriteFile(t, cfg, text)
	testnet.Eventually(t, 10*time.Second, func() bool {
		exchangeWith(addr, "PING\r\n") // a dial failure: a WARN line
		return strings.Contains(p.Out.String(), `level=WARN msg="backend dial failed" protocol=Redis`)
	}, "no text log line after the reload to log_format: text:\n%s", p.Out)
	if strings.Contains(p.Out.String(), `level=INFO msg="connection closed"`) {
		t.Errorf("an INFO access line after the reload to log_level: warn:\n%s", p.Out)
	}
}

// startCLI runs the binary with args until the test ends and returns the
// address it prints on stdout ("listening: ADDR", or the JSON banner's
// {"banner":"listening","addr":ADDR} with log_format json) and the process
// (its stderr, the log, in Out), and its stdout.
func startCLI(t *testing.T, bin string, args ...string) (string, *testnet.Process, *testnet.Buffer) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stdout := &testnet.Buffer{}
	cmd.Stdout = stdout
	p := testnet.StartProcess(t, cmd)
	listening := regexp.MustCompile(`(?m)^listening: (\S+)|"addr":"([^"]+)","banner":"listening"`)
	var addr string
	testnet.Eventually(t, 20*time.Second, func() bool {
		if m := listening.FindStringSubmatch(stdout.String()); m != nil {
			addr = m[1] + m[2]
		}
		return addr != ""
	}, "%s never listened; stdout:\n%s\nstderr:\n%s", bin, stdout, p.Out)
	return addr, p, stdout
}
