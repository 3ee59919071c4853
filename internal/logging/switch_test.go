package logging

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

// TestSwitchFollowsSet: a logger and one derived from it follow a change
// of format and level made after they were built.
func TestSwitchFollowsSet(t *testing.T) {
	var buf bytes.Buffer
	sw := NewSwitch(&buf, "text", "info")
	log := slog.New(sw)
	derived := log.With("component", "x").WithGroup("g")

	log.Debug("hidden")
	log.Info("text line", "k", 1)
	derived.Info("derived text", "k", 2)
	if out := buf.String(); strings.Contains(out, "hidden") || !strings.Contains(out, "msg=\"text line\" k=1") ||
		!strings.Contains(out, "component=x g.k=2") {
		t.Fatalf("text output:\n%s", out)
	}

	buf.Reset()
	sw.Set("json", "debug")
	if !sw.JSON() {
		t.Fatal("JSON() after Set(json)")
	}
	log.Debug("now shown")
	derived.Info("derived json", "k", 3)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("json output:\n%s", buf.String())
	}
	var first, second map[string]any
	if json.Unmarshal([]byte(lines[0]), &first) != nil || first["msg"] != "now shown" || first["level"] != "DEBUG" {
		t.Fatalf("first json line: %s", lines[0])
	}
	if json.Unmarshal([]byte(lines[1]), &second) != nil || second["component"] != "x" || second["g"].(map[string]any)["k"] != 3.0 {
		t.Fatalf("derived json line: %s", lines[1])
	}

	buf.Reset()
	sw.Set("text", "warn")
	derived.Info("hidden again")
	if buf.Len() != 0 {
		t.Fatalf("info logged at warn: %s", buf.String())
	}
}
