//go:build unix

package main

// Operator-visible signals through the binary: the banner, the open line
// of the access log, what a reload says it changed, the file watcher's
// switch and its coalescing of one edit with a SIGHUP.

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// TestBannerNamesRoutes: the start-up banner names each route as the
// access log and the metrics do, so two TLS routes are told apart by their
// SNI, and a UDP listener is printed as one, not as a second "listening:"
// line that looks like the stream port.
func TestBannerNamesRoutes(t *testing.T) {
	addr := testnet.FreeAddr(t)
	cfg := filepath.Join(t.TempDir(), "banner.yaml")
	testnet.WriteFile(t, cfg, fmt.Sprintf(`server:
  listen: %q
  listen_udp: %q
protocols:
  - name: TLS
    sni: [a.example]
    target: "127.0.0.1:8443"
  - name: TLS
    sni: [b.example, "*.c.example"]
    alpn: [h2]
    target: "127.0.0.1:9443"
  - name: DNS
    target: "127.0.0.1:53"
monitoring:
  metrics_port: 0
  health_check_port: 0
`, addr, addr))
	p := start(t, "-config", cfg)
	p.waitLine(t, `^route: +DNS `)
	out := p.stdout.String()
	for _, want := range []string{
		"listening: " + addr + "\n",
		"listening (udp): " + addr + "\n",
		"route:    TLS[sni=a.example] -> 127.0.0.1:8443\n",
		"route:    TLS[sni=b.example,*.c.example;alpn=h2] -> 127.0.0.1:9443\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("banner has no line %q:\n%s", want, out)
		}
	}
	if n := len(regexp.MustCompile(`(?m)^listening: `).FindAllString(out, -1)); n != 1 {
		t.Errorf("%d \"listening: \" lines, want the stream port's only:\n%s", n, out)
	}
}

// TestAccessLogOpenLine: with access_log_open a connection is logged when
// it opens, while it is still open, on both data planes; the closing line
// follows when it ends.
func TestAccessLogOpenLine(t *testing.T) {
	for _, plane := range []string{"events", "goroutines"} {
		t.Run(plane, func(t *testing.T) {
			be := testnet.Banner(t, "A:")
			cfg := filepath.Join(t.TempDir(), "open.yaml")
			testnet.WriteFile(t, cfg, fmt.Sprintf(`server:
  listen: "127.0.0.1:0"
  data_plane: %s
  access_log: true
  access_log_open: true
protocols:
  - name: SSH
    target: %q
monitoring:
  metrics_port: 0
  health_check_port: 0
`, plane, be))
			p := start(t, "-config", cfg)
			addr := p.waitLine(t, `^listening: (\S+)`)[1]
			c, _ := openStream(t, addr, "A:")
			open := regexp.MustCompile(`level=INFO msg="connection opened" client=127\.0\.0\.1:\d+ protocol=SSH route=SSH target=` + regexp.QuoteMeta(be) + "\n")
			testnet.Eventually(t, 10*time.Second, func() bool { return open.MatchString(p.Out.String()) },
				"no open line while the connection is open; stderr:\n%s", p.Out)
			if strings.Contains(p.Out.String(), `msg="connection closed"`) {
				t.Fatalf("closed before the client closed; stderr:\n%s", p.Out)
			}
			c.Close()
			testnet.Eventually(t, 10*time.Second, p.logged(`msg="connection closed"`), "no closing line; stderr:\n%s", p.Out)
		})
	}
}

// TestReloadNamesListenerChanges: a reload that only adds or removes a
// listen address says so, instead of "no route changed".
func TestReloadNamesListenerChanges(t *testing.T) {
	be := testnet.Banner(t, "A:")
	first, second := testnet.FreeAddr(t), testnet.FreeAddr(t)
	cfg := filepath.Join(t.TempDir(), "listen.yaml")
	conf := func(listen ...string) string {
		return fmt.Sprintf("server:\n  listen: [%s]\nprotocols:\n  - name: SSH\n    target: %q\nmonitoring:\n  metrics_port: 0\n  health_check_port: 0\n",
			`"`+strings.Join(listen, `", "`)+`"`, be)
	}
	testnet.WriteFile(t, cfg, conf(first))
	p := start(t, "-config", cfg, "-watch=false")
	p.waitLine(t, `^listening: `)
	testnet.WriteFile(t, cfg, conf(first, second))
	p.Cmd.Process.Signal(syscall.SIGHUP)
	testnet.Eventually(t, 10*time.Second, p.logged(`msg="configuration applied" listeners_added=[`+second+`]`),
		"the added listener is not named; stderr:\n%s", p.Out)
	testnet.WriteFile(t, cfg, conf(second))
	p.Cmd.Process.Signal(syscall.SIGHUP)
	testnet.Eventually(t, 10*time.Second, p.logged(`msg="configuration applied" listeners_removed=[`+first+`]`),
		"the removed listener is not named; stderr:\n%s", p.Out)
	if strings.Contains(p.Out.String(), "no route") {
		t.Fatalf("a reload that moved a listener says nothing changed; stderr:\n%s", p.Out)
	}
}

// watching reports whether process pid holds an inotify descriptor (the
// file watcher's), and whether that could be told at all (/proc).
func watching(t *testing.T, pid int) (yes, known bool) {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(dir)
	if err != nil {
		return false, false
	}
	for _, fd := range fds {
		if l, _ := os.Readlink(filepath.Join(dir, fd.Name())); l == "anon_inode:inotify" {
			return true, true
		}
	}
	return false, true
}

// replaceFile writes data to path as sed -i does: a new file renamed over
// it.
func replaceFile(t *testing.T, path, data string) {
	t.Helper()
	tmp := path + ".sed"
	testnet.WriteFile(t, tmp, data)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestWatchSwitch: by default the file is not watched (only SIGHUP reloads
// it: no inotify descriptor), and an edit goes live on the signal; with
// -watch a saved edit goes live by itself.
func TestWatchSwitch(t *testing.T) {
	a, b := testnet.Banner(t, "A:"), testnet.Banner(t, "B:")
	cfg := filepath.Join(t.TempDir(), "watch.yaml")
	conf := func(target string) string {
		return fmt.Sprintf("server:\n  listen: \"127.0.0.1:0\"\nprotocols:\n  - name: SSH\n    target: %q\nmonitoring:\n  metrics_port: 0\n  health_check_port: 0\n", target)
	}
	testnet.WriteFile(t, cfg, conf(a))
	p := start(t, "-config", cfg)
	addr := p.waitLine(t, `^listening: (\S+)`)[1]
	if yes, known := watching(t, p.Cmd.Process.Pid); !known {
		t.Log("no /proc: cannot tell whether the file is watched")
	} else if yes {
		t.Fatal("the file is watched without -watch")
	}
	replaceFile(t, cfg, conf(b))
	p.Cmd.Process.Signal(syscall.SIGHUP)
	testnet.Eventually(t, 10*time.Second, func() bool { return ask(addr, "SSH-2.0-x\r\n") == "B:SSH-2.0-x\r\n" },
		"SIGHUP did not apply the edit; stderr:\n%s", p.Out)

	testnet.WriteFile(t, cfg, conf(a))
	w := start(t, "-config", cfg, "-watch")
	addr = w.waitLine(t, `^listening: (\S+)`)[1]
	if yes, known := watching(t, w.Cmd.Process.Pid); known && !yes {
		t.Fatal("-watch: no inotify descriptor")
	}
	replaceFile(t, cfg, conf(b))
	testnet.Eventually(t, 10*time.Second, func() bool { return ask(addr, "SSH-2.0-x\r\n") == "B:SSH-2.0-x\r\n" },
		"-watch did not apply the saved edit; stderr:\n%s", w.Out)
}

// TestEditAndHangupRejectedOnce: with -watch, one bad edit saved as sed -i
// does and followed by SIGHUP reaches both the watcher and the signal; it
// is tried, and rejected, once.
func TestEditAndHangupRejectedOnce(t *testing.T) {
	be := testnet.Banner(t, "A:")
	cfg := filepath.Join(t.TempDir(), "once.yaml")
	good := fmt.Sprintf("server:\n  listen: \"127.0.0.1:0\"\n  log_level: debug\nprotocols:\n  - name: SSH\n    target: %q\nmonitoring:\n  metrics_port: 0\n  health_check_port: 0\n", be)
	testnet.WriteFile(t, cfg, good)
	p := start(t, "-config", cfg, "-watch")
	addr := p.waitLine(t, `^listening: (\S+)`)[1]
	replaceFile(t, cfg, strings.Replace(good, be, "nope", 1))
	p.Cmd.Process.Signal(syscall.SIGHUP)
	// Whichever came second logs that it found the bytes just tried.
	testnet.Eventually(t, 10*time.Second, p.logged("configuration file unchanged since the reload just tried"),
		"the edit was not coalesced; stderr:\n%s", p.Out)
	if n := strings.Count(p.Out.String(), "configuration rejected"); n != 1 {
		t.Fatalf("%d \"configuration rejected\" lines for one edit; stderr:\n%s", n, p.Out)
	}
	if got := ask(addr, "SSH-2.0-x\r\n"); got != "A:SSH-2.0-x\r\n" {
		t.Fatalf("after the rejected edit: %q", got)
	}
}

// TestCheckIndentationLine: -check names the line a YAML indentation error
// is on (6, the key indented one space too little), not the line where its
// list began (3).
func TestCheckIndentationLine(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "indent.yaml")
	testnet.WriteFile(t, cfg, "server:\n  listen: \"127.0.0.1:0\"\nprotocols:\n  - name: SSH\n    target: \"127.0.0.1:22\"\n   priority: 1\n")
	_, stderr, code := runBinary(t, "-check", "-config", cfg)
	if code != exitFail || !strings.HasPrefix(stderr, cfg+":6: ") {
		t.Fatalf("exit %d, stderr %q, want %s:6: ...", code, stderr, cfg)
	}
}
