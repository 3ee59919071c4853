//go:build unix

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/darkit/protoplex/internal/testnet"
)

// TestSystemdTransparentDropIn: deploy/systemd/transparent.conf, installed
// as a drop-in of protoplex.service, passes systemd-analyze verify and
// grants CAP_NET_ADMIN and no other capability; without it the service
// holds none.
func TestSystemdTransparentDropIn(t *testing.T) {
	analyze := testnet.RequireBinary(t, "systemd-analyze")
	dir, units := installUnits(t, "protoplex.service", "transparent.conf")
	if got := regexp.MustCompile(`(?m)^(CapabilityBoundingSet|AmbientCapabilities)=(.*)$`).FindAllStringSubmatch(units["transparent.conf"], -1); len(got) != 2 || got[0][2] != "CAP_NET_ADMIN" || got[1][2] != "CAP_NET_ADMIN" {
		t.Fatalf("transparent.conf grants %q, want CAP_NET_ADMIN in both sets", got)
	}
	if out := verifyUnits(t, analyze, dir); len(out) > 0 {
		t.Fatalf("systemd-analyze verify with the drop-in:\n%s", out)
	}
	granted := func() []string {
		cmd := exec.Command(analyze, "security", "--offline=yes", "--no-pager", "protoplex.service")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "exposure level") {
			t.Skipf("systemd-analyze security --offline not available here (%v): %.200s", err, out)
		}
		var caps []string
		for _, m := range regexp.MustCompile(`(?m)^✗ CapabilityBoundingSet=~(\S+)`).FindAllStringSubmatch(string(out), -1) {
			caps = append(caps, m[1])
		}
		return caps
	}
	if caps := granted(); len(caps) != 1 || caps[0] != "CAP_NET_ADMIN" {
		t.Errorf("with the drop-in the service holds %q, want only CAP_NET_ADMIN", caps)
	}
	os.Remove(filepath.Join(dir, "protoplex.service.d", "transparent.conf"))
	if caps := granted(); len(caps) != 0 {
		t.Errorf("without the drop-in the service holds %q, want none", caps)
	}
}

// installUnits copies deploy/systemd's units into a temporary directory,
// with ExecStart pointed at the test binary, and the drop-in dropIn as one
// of unit; it returns the directory and each file's text by name.
func installUnits(t *testing.T, unit, dropIn string) (string, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	units := map[string]string{}
	for _, name := range []string{"protoplex.service", "protoplex.socket", dropIn} {
		text, err := os.ReadFile(filepath.Join("../../deploy/systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		units[name] = string(text)
		to := filepath.Join(dir, name)
		if name == dropIn {
			to = filepath.Join(dir, unit+".d", name)
			if err := os.Mkdir(filepath.Dir(to), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		testnet.WriteFile(t, to, strings.ReplaceAll(string(text), "/usr/local/bin/protoplex", binary))
	}
	return dir, units
}

// verifyUnits runs systemd-analyze verify on the units in dir and returns
// what it said (nothing when it found nothing wrong).
func verifyUnits(t *testing.T, analyze, dir string) string {
	t.Helper()
	cmd := exec.Command(analyze, "verify", "--man=no", "protoplex.service", "protoplex.socket")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil && len(out) == 0 {
		return err.Error()
	}
	return string(out)
}
