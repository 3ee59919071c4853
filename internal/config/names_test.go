package config

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// namesConfig writes files (name → content) and a config t.yaml whose
// protocols: entries are protos, in a new directory; it returns the
// config's path.
func namesConfig(t *testing.T, protos string, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "t.yaml")
	y := "server:\n  listen: \"127.0.0.1:0\"\nprotocols:\n" + protos
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestNamesFiles: sni_file and host_file add their names, after those
// written inline, from a path relative to the config; comments and blank
// lines are skipped; the routes built carry the names.
func TestNamesFiles(t *testing.T) {
	path := namesConfig(t, `  - name: tls
    target: "127.0.0.1:1"
    sni: inline.example
    sni_file: names/sni.txt
  - name: http
    target: "127.0.0.1:2"
    host_file: hosts.txt
`, map[string]string{"hosts.txt": "# hosts\n\nWWW.example.com.   # the site\n*.cdn.example\n"})
	if err := os.Mkdir(filepath.Join(filepath.Dir(path), "names"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(path), "names", "sni.txt"), []byte("a.example\r\n  b.example\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := c.BuildProtocols()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"inline.example", "a.example", "b.example"}; !slices.Equal(ps[0].SNI, want) {
		t.Errorf("sni %q, want %q", ps[0].SNI, want)
	}
	if want := []string{"WWW.example.com.", "*.cdn.example"}; !slices.Equal(ps[1].Hosts, want) {
		t.Errorf("host %q, want %q", ps[1].Hosts, want)
	}
}

// TestNamesFilesRefused: every bad line is reported with the names file's
// line, a missing file at the config's key, and the bounds (line length,
// file size, names in all) hold against hostile files.
func TestNamesFilesRefused(t *testing.T) {
	many := func(n int, format string) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, format+"\n", i)
		}
		return b.String()
	}
	entry := func(key, file string) string {
		return fmt.Sprintf("  - name: tls\n    target: \"127.0.0.1:1\"\n    %s: %s\n", key, file)
	}
	for _, c := range []struct {
		name   string
		protos string
		files  map[string]string
		want   []string
	}{
		{"bad lines", entry("sni_file", "n.txt"), map[string]string{"n.txt": "a.example\nbad name\n^x$\na.example.\n"}, []string{
			`n.txt:2: protocols[0] (tls): sni_file: "bad name" is not a host name`,
			`n.txt:3: protocols[0] (tls): sni_file: "^x$" looks like a regular expression`,
			`n.txt:4: protocols[0] (tls): sni_file: "a.example." is listed twice (first at line 1)`}},
		{"inline and in the file", entry("sni_file", "n.txt") + "    sni: [B.example]\n", map[string]string{"n.txt": "a.example\nb.example\n"}, []string{
			`n.txt:2: protocols[0] (tls): sni_file: "b.example" is listed twice (also written inline)`}},
		{"twice inline", "  - name: tls\n    target: \"127.0.0.1:1\"\n    sni: [a.example, b.example, A.example.]\n    alpn: [h2, h2]\n", nil, []string{
			`t.yaml:6: protocols[0] (tls): sni "A.example." is listed twice (first at sni[0])`, `t.yaml:7: protocols[0] (tls): alpn "h2" is listed twice (first at alpn[0])`}},
		{"missing", entry("host_file", "none.txt"), nil, []string{`t.yaml:6: protocols[0] (tls): host_file "none.txt": cannot read it`}},
		{"directory", entry("sni_file", "."), nil, []string{`t.yaml:6: protocols[0] (tls): sni_file ".": cannot read it`, "not a regular file"}},
		{"empty", entry("sni_file", "n.txt"), map[string]string{"n.txt": "# nothing yet\n"}, []string{"protocols[0] (tls): sni_file: no names in the file"}},
		{"long line", entry("sni_file", "n.txt"), map[string]string{"n.txt": "a.example\n" + strings.Repeat("b", 5000) + "\n"}, []string{"n.txt:2: protocols[0] (tls): sni_file: a line of more than 1024 bytes"}},
		{"large file", entry("sni_file", "n.txt"), map[string]string{"n.txt": "a.example\n" + strings.Repeat("#"+strings.Repeat("c", 1000)+"\n", MaxNamesFileSize/1000)}, []string{"larger than 33554432 bytes"}},
		{"names in all", entry("sni_file", "a.txt") + entry("sni_file", "b.txt"), map[string]string{"a.txt": many(60000, "a%d.example"), "b.txt": many(60000, "b%d.example")},
			[]string{"b.txt:40001: protocols[1] (tls): sni_file: more than 100000 names in all"}},
		{"names in all, inline", entry("sni_file", "a.txt") + "    alpn: [h2]\n" + entry("sni_file", "b.txt"), map[string]string{"a.txt": many(50000, "a%d.example"), "b.txt": many(50000, "b%d.example")},
			[]string{"t.yaml:8: protocols[1] (tls): 100001 sni, alpn and host names in protocols[0..1], at most 100000 in all protocols"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := namesConfig(t, c.protos, c.files)
			_, err := Load(path)
			if err == nil {
				t.Fatal("accepted")
			}
			msg := strings.ReplaceAll(err.Error(), filepath.Dir(path)+string(filepath.Separator), "")
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q\nlacks %q", msg, w)
				}
			}
		})
	}
}

// TestNamesFilesReloaded: a reload reads the names file again.
func TestNamesFilesReloaded(t *testing.T) {
	path := namesConfig(t, "  - name: tls\n    target: \"127.0.0.1:1\"\n    sni_file: n.txt\n", map[string]string{"n.txt": "a.example\n"})
	w, err := Watch(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := os.WriteFile(filepath.Join(filepath.Dir(path), "n.txt"), []byte("b.example\nc.example\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := w.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := w.Config().Protocols[0].SNI; !slices.Equal(got, []string{"b.example", "c.example"}) {
		t.Fatalf("after reload: sni %q", got)
	}
}
