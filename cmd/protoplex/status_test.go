package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex"
	"github.com/darkit/protoplex/internal/metrics"
	"github.com/darkit/protoplex/internal/testnet"
)

// TestStatusCommands: protoplex status, target and unban against a running
// process, through its status API: the status shows the routes and
// targets; a drain with the token from -config's file holds the target
// (the traffic moves, status says so); a wrong token, an unknown target and
// an unban of a source not banned fail with exit 1 and the reason; admin
// without a token refuses to start.
func TestStatusCommands(t *testing.T) {
	dir := t.TempDir()
	a, b := testnet.Banner(t, "A"), testnet.Banner(t, "B")
	port := testnet.FreePort(t)
	tokenFile := filepath.Join(dir, "token")
	testnet.WriteFile(t, tokenFile, "cli-test-token-0123456789\n")
	body := func(tokenLine string) string {
		return fmt.Sprintf("server:\n  listen: \"127.0.0.1:0\"\nprotocols:\n  - name: SSH\n    target: [%q, %q]\n    balance: first\nmonitoring:\n  metrics_port: %d\n  admin: true\n%s", a, b, port, tokenLine)
	}
	cfg := filepath.Join(dir, "c.yaml")
	testnet.WriteFile(t, cfg, body(fmt.Sprintf("  admin_token_file: %q\n", tokenFile)))
	p := start(t, "-config", cfg)
	data := p.waitLine(t, `^listening: (\S+)`)[1]

	out, errOut, code := runBinary(t, "status", "-config", cfg)
	if code != exitOK || !strings.Contains(out, "route SSH") || !strings.Contains(out, a) || !strings.Contains(out, "UP") {
		t.Fatalf("status: exit %d\n%s%s", code, out, errOut)
	}
	out, _, code = runBinary(t, "status", "-json", "-url", fmt.Sprintf("http://127.0.0.1:%d", port))
	var s metrics.Status
	if err := json.Unmarshal([]byte(out), &s); code != exitOK || err != nil || s.SchemaVersion != metrics.SchemaVersion || len(s.Routes) != 1 {
		t.Fatalf("status -json: exit %d, %v:\n%s", code, err, out)
	}

	if out, errOut, code := runBinary(t, "target", "drain", "SSH", a, "-config", cfg); code != exitOK || !strings.Contains(out, "ok:") {
		t.Fatalf("target drain: exit %d\n%s%s", code, out, errOut)
	}
	if reply := ask(data, "SSH-2.0-x\r\n"); !strings.HasPrefix(reply, "B") {
		t.Fatalf("after the drain a new connection went to %q", reply)
	}
	out, _, _ = runBinary(t, "status", "-problems", "-config", cfg)
	if !strings.Contains(out, "DRAIN") || !strings.Contains(out, "operator") || strings.Contains(out, b) {
		t.Fatalf("status -problems after the drain:\n%s", out)
	}
	if p.logged("status action")() == false {
		t.Fatalf("the action was not logged:\n%s", p.Out)
	}

	wrong := filepath.Join(dir, "wrong")
	testnet.WriteFile(t, wrong, "not-the-token-0123456789")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"target", "ready", "SSH", a, "-config", cfg, "-token-file", wrong}, "403"},
		{[]string{"target", "ready", "SSH", "127.0.0.1:1", "-config", cfg}, "no route"},
		{[]string{"unban", "192.0.2.1", "-config", cfg}, "not banned"},
	} {
		_, errOut, code := runBinary(t, c.args...)
		if code != exitFail || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, stderr %q, want 1 and %q", c.args, code, errOut, c.want)
		}
	}
	for _, args := range [][]string{{"target", "pause", "SSH", a}, {"target", "drain", "SSH"}, {"unban"}, {"status", "extra"}} {
		if _, _, code := runBinary(t, args...); code != exitUsage {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	if reply := ask(data, "SSH-2.0-x\r\n"); !strings.HasPrefix(reply, "B") {
		t.Fatalf("a refused action changed the routing: %q", reply)
	}

	noToken := filepath.Join(dir, "notoken.yaml")
	testnet.WriteFile(t, noToken, body(""))
	q := start(t, "-config", noToken)
	testnet.Eventually(t, 15*time.Second, func() bool {
		select {
		case <-q.Exited():
			return true
		default:
			return false
		}
	}, "admin: true without a token started; stderr:\n%s", q.Out)
	if !strings.Contains(q.Out.String(), "no token") {
		t.Fatalf("admin without a token: %s", q.Out)
	}
}

// TestStatusCommandsDocumented: each status sub-command has a section in
// docs/cli.md, with its flags, and the token's variable is named.
func TestStatusCommandsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	stdout, _, _ := runBinary(t, "-h")
	for _, c := range statusCommands {
		if !bytes.Contains(doc, []byte("### "+c.name)) {
			t.Errorf("docs/cli.md has no section for the sub-command %s", c.name)
		}
		if !strings.Contains(stdout, "  "+c.name+" ") {
			t.Errorf("-h does not list %s", c.name)
		}
		out, _, code := runBinary(t, c.name, "-h")
		if code != exitOK {
			t.Errorf("%s -h: exit %d", c.name, code)
		}
		for _, f := range helpFlags(out) {
			if !bytes.Contains(doc, []byte("`-"+f)) {
				t.Errorf("docs/cli.md does not document the flag -%s of %s", f, c.name)
			}
		}
	}
	if !bytes.Contains(doc, []byte(tokenEnv)) {
		t.Errorf("docs/cli.md does not mention %s", tokenEnv)
	}
}

// TestAdminTokenBounds: the token is read bounded, trimmed, and must be 16
// to 4096 bytes; a file far larger is refused without being read whole.
func TestAdminTokenBounds(t *testing.T) {
	dir := t.TempDir()
	env := func(v string) func(string) string { return func(string) string { return v } }
	pm := protoplex.NewProtocolManager()
	defer pm.Close()
	cfg := protoplex.DefaultConfig()
	cfg.Monitoring.Admin = true
	for _, c := range []struct {
		name, file, env, want string
	}{
		{"short file", "0123456789\n", "", "want 16 to 4096"},
		{"huge file", strings.Repeat("x", 1<<20), "", "longer than 4096"},
		{"short env", "", "abc", "want 16 to 4096"},
		{"none", "", "", "no token"},
		{"good file", "  good-token-0123456789\n", "", ""},
		{"good env", "", "good-token-0123456789", ""},
	} {
		cfg.Monitoring.AdminTokenFile = ""
		if c.file != "" {
			cfg.Monitoring.AdminTokenFile = filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-"))
			testnet.WriteFile(t, cfg.Monitoring.AdminTokenFile, c.file)
		}
		err := enableAdmin(pm, *cfg, env(c.env))
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	cfg.Monitoring.Admin = false
	if err := enableAdmin(pm, *cfg, env("")); err != nil {
		t.Errorf("admin off: %v", err)
	}
}
