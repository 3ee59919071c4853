//go:build linux

// Package scripts_test runs the repository's shell scripts where their
// effects on the machine can be watched without changing the machine.
package scripts_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestInstallKeepsPolicyRcD: install-test-deps.sh forbids service starts
// with /usr/sbin/policy-rc.d while apt-get runs, then puts back what was
// there: the administrator's own file, or nothing. It runs in a private
// mount namespace whose /usr/sbin and /tmp are empty tmpfs, with a PATH
// where every peer is missing and apt-get and go are fakes, so neither the
// real system nor its /tmp (the script's log) is touched.
func TestInstallKeepsPolicyRcD(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a mount namespace")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("no unshare")
	}
	script, err := filepath.Abs("install-test-deps.sh")
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	// apt-get records what policy-rc.d said while it ran.
	for name, body := range map[string]string{
		"apt-get": "#!/bin/sh\ncat /usr/sbin/policy-rc.d > /usr/sbin/.seen\n",
		"go":      "#!/bin/sh\nexit 0\n",
	} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, tool := range []string{"bash", "env", "cat", "cp", "rm", "tee", "chmod", "mktemp", "id", "dirname", "sh", "mkdir"} {
		path, err := exec.LookPath(tool)
		if err != nil {
			t.Skipf("no %s", tool)
		}
		if err := os.Symlink(path, filepath.Join(bin, tool)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, before, after string // "" = no file
	}{
		{"the administrator's file", "#!/bin/sh\nexit 0 # the admin's\n", "#!/bin/sh\nexit 0 # the admin's\n"},
		{"no file", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The fakes and the script move into the new /usr/sbin before
			// /tmp, where the test keeps them (and where a checkout may
			// live, as CI's does), is covered.
			setup := `mount -t tmpfs tmpfs /usr/sbin && mkdir /usr/sbin/fake && cp -P "$FAKEBIN"/* /usr/sbin/fake/ && ` +
				`cp "$SCRIPT" /usr/sbin/fake/install-test-deps.sh && mount -t tmpfs tmpfs /tmp`
			if tc.before != "" {
				setup += ` && printf %s "$BEFORE" > /usr/sbin/policy-rc.d`
			}
			cmd := exec.Command(unshare, "--mount", "--propagation", "private", "/bin/sh", "-c", setup+
				` && PATH=/usr/sbin/fake /usr/sbin/fake/install-test-deps.sh >/dev/null && cat /usr/sbin/.seen && echo "--- after:" &&`+
				` if [ -e /usr/sbin/policy-rc.d ]; then cat /usr/sbin/policy-rc.d; else echo "(none)"; fi`)
			cmd.Env = append(os.Environ(), "BEFORE="+tc.before, "FAKEBIN="+bin, "SCRIPT="+script)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			during, after, ok := strings.Cut(string(out), "--- after:\n")
			if !ok {
				t.Fatalf("apt-get was not run:\n%s", out)
			}
			if !strings.Contains(during, "exit 101") {
				t.Errorf("policy-rc.d during apt-get: %q, want exit 101", during)
			}
			want := tc.after
			if want == "" {
				want = "(none)\n"
			}
			if after != want {
				t.Errorf("policy-rc.d after: %q, want %q", after, want)
			}
		})
	}
}
