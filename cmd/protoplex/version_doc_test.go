package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// documentedVersions turns the -version examples of docs/cli.md into
// patterns: the example's revision, pseudo-version timestamp and commit
// time stand for any; everything else, the version's form included, must
// be as printed.
func documentedVersions(t *testing.T) []*regexp.Regexp {
	t.Helper()
	doc, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "`-version` prints")
	if !ok {
		t.Fatal("docs/cli.md: no -version section")
	}
	_, block, _ := strings.Cut(rest, "```\n")
	block, _, _ = strings.Cut(block, "```")
	var out []*regexp.Regexp
	for _, line := range strings.Split(strings.TrimSpace(block), "\n") {
		re := regexp.QuoteMeta(strings.TrimSpace(line))
		re = strings.ReplaceAll(re, "0123456789ab", "[0-9a-f]{12}")
		re = strings.ReplaceAll(re, "20261201200000", `\d{14}`)
		re = strings.ReplaceAll(re, "2026-12-01T20:00:00Z", `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`)
		out = append(out, regexp.MustCompile("^"+re+"$"))
	}
	if len(out) < 3 {
		t.Fatalf("docs/cli.md: -version examples %q", block)
	}
	return out
}

// TestVersionDocumented: what -version prints is one of docs/cli.md's
// examples, for the binary the tests run and for a build of a fresh git
// clone, clean and with a local change (where the go command stamps a
// pseudo-version, +dirty when modified).
func TestVersionDocumented(t *testing.T) {
	docs := documentedVersions(t)
	documented := func(what, out string) {
		t.Helper()
		out = strings.TrimSpace(out)
		for _, re := range docs {
			if re.MatchString(out) {
				return
			}
		}
		t.Errorf("%s: -version prints %q, which no example of docs/cli.md shows", what, out)
	}
	stdout, _, _ := runBinary(t, "-version")
	documented("the test binary", stdout)

	git, err := exec.LookPath("git")
	if err != nil {
		t.Skip("no git: cannot build a checkout")
	}
	top, err := exec.Command(git, "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	clone := filepath.Join(t.TempDir(), "clone")
	if out, err := exec.Command(git, "clone", "--quiet", strings.TrimSpace(string(top)), clone).CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	build := func(what string) {
		bin := filepath.Join(t.TempDir(), "protoplex")
		cmd := exec.Command("go", "build", "-buildvcs=true", "-o", bin, "./cmd/protoplex")
		cmd.Dir = clone
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", what, err, out)
		}
		out, err := exec.Command(bin, "-version").Output()
		if err != nil {
			t.Fatal(err)
		}
		documented(what, string(out))
	}
	build("a clean clone")
	f, err := os.OpenFile(filepath.Join(clone, "README.md"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("\nlocal change\n")
	f.Close()
	build("a clone with a local change")
}
