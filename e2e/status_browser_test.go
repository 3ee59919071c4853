package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/darkit/protoplex"
	"github.com/darkit/protoplex/internal/testnet"
)

// statusToken is the admin token of the browser test's process.
const statusToken = "browser-test-token-0123456789"

// TestStatusPageInBrowser drives the status page of the real binary in
// headless Chromium:
//   - a backend that goes away turns DOWN on the page within the health
//     interval, with no reload of the page;
//   - draining a target from the page (with the token) sends new
//     connections elsewhere while a connection established before keeps
//     working;
//   - with JavaScript off the page renders every target's state;
//   - a Host naming another site is refused, and the data port does not
//     serve the page.
//
// With PROTOPLEX_STATUS_SCREENSHOTS=DIR it writes status-light.png and
// status-dark.png there (docs/img holds the committed ones).
func TestStatusPageInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("the browser drives the binary, which no data-plane setting changes: run in the full (race) run")
	}
	browser := requireBinary(t, "chromium")
	bin := buildCLI(t)
	dir := t.TempDir()
	a, b := testnet.Banner(t, "A"), testnet.Banner(t, "B")
	cLn := testnet.Listen(t)
	c := testnet.ServeOn(t, cLn, func(conn net.Conn) { io.Copy(io.Discard, conn) })
	h := testnet.Banner(t, "H")
	port, metricsAddr := loopbackPort(t)
	tokenFile := filepath.Join(dir, "token")
	testnet.WriteFile(t, tokenFile, statusToken+"\n")
	cfg := filepath.Join(dir, "status.yaml")
	testnet.WriteFile(t, cfg, fmt.Sprintf(`server:
  listen: "127.0.0.1:0"
protocols:
  - name: SSH
    target: [%q, %q, %q]
    balance: first
    health_check: {interval: 200ms, timeout: 1s, check: tcp, fall: 2, rise: 1}
  - name: HTTP
    target: %q
security:
  max_connections_per_ip: 1000
monitoring:
  metrics_port: %d
  admin: true
  admin_token_file: %q
`, a, b, c, h, port, tokenFile))
	cmd := exec.Command(bin, "-config", cfg)
	stdout := &testnet.Buffer{}
	cmd.Stdout = stdout
	proc := testnet.StartProcess(t, cmd)
	listening := regexp.MustCompile(`(?m)^listening: (\S+)`)
	var data string
	testnet.Eventually(t, 20*time.Second, func() bool {
		if m := listening.FindStringSubmatch(stdout.String()); m != nil {
			data = m[1]
		}
		return data != ""
	}, "protoplex never listened; stderr:\n%s", proc.Out)
	page := "http://" + metricsAddr + "/status"

	// Security through the binary: another site's name is refused; the
	// data port routes /status as any HTTP request (to H), never serves it.
	req, _ := http.NewRequest(http.MethodGet, page, nil)
	req.Host = "evil.example:" + fmt.Sprint(port)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("GET /status with Host evil.example: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if reply := exchangeWith(data, "GET /status HTTP/1.1\r\nHost: "+metricsAddr+"\r\n\r\n"); !strings.HasPrefix(reply, "HGET /status") {
		t.Fatalf("the data port answered /status with %q, want the HTTP route's backend", reply)
	}

	ctx := startBrowser(t, browser)
	state := func(ctx context.Context, target string) string {
		js := fmt.Sprintf(`(() => { for (const r of document.querySelectorAll("tr")) {
			const t = r.querySelector('td[data-f="target"]');
			if (t && t.textContent === %q) return r.querySelector('td[data-f="state"]').textContent + "/" + r.querySelector('td[data-f="held"]').textContent;
		} return ""; })()`, target)
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("reading the page: %v", err)
		}
		return s
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(page), chromedp.WaitVisible("#admin"),
		discard(chromedp.Evaluate[bool](`window.notReloaded = true`))); err != nil {
		t.Fatalf("loading %s: %v", page, err)
	}
	testnet.Eventually(t, 20*time.Second, func() bool { return state(ctx, c) == "UP/" }, "target C never UP on the page: %q", testnet.Later(func() string { return state(ctx, c) }))

	// C goes away: its row turns DOWN by itself (fall 2 × 200 ms, then
	// the page's next poll), the page never reloaded.
	cLn.Close()
	downAt := time.Now()
	testnet.Eventually(t, 20*time.Second, func() bool { return state(ctx, c) == "DOWN/" }, "target C never DOWN on the page: %q", testnet.Later(func() string { return state(ctx, c) }))
	t.Logf("C's row turned DOWN %v after its listener closed (checks every 200 ms, fall 2; the page polls every 1 s)", time.Since(downAt).Round(10*time.Millisecond))
	if same, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.notReloaded === true`)); err != nil || !same {
		t.Fatalf("the page was reloaded (%v)", err)
	}

	// A connection established to A before the drain.
	held, err := net.DialTimeout("tcp", data, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	held.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(held)
	fmt.Fprint(held, "SSH-2.0-held\r\n")
	if line, err := r.ReadString('\n'); err != nil || line != "ASSH-2.0-held\r\n" {
		t.Fatalf("the held connection: %q %v", line, err)
	}

	// Drain A from the page, with the token.
	drain := fmt.Sprintf(`button[data-act="target"][data-target=%q][data-state="drain"]`, a)
	if err := chromedp.Do(ctx, chromedp.SendKeys("#token", statusToken), chromedp.Click(drain)); err != nil {
		t.Fatalf("draining from the page: %v", err)
	}
	testnet.Eventually(t, 20*time.Second, func() bool { return state(ctx, a) == "DRAIN/operator" }, "A never DRAIN on the page: %q", testnet.Later(func() string { return state(ctx, a) }))
	for i := range 5 {
		if reply := exchangeWith(data, "SSH-2.0-new\r\n"); !strings.HasPrefix(reply, "BSSH-2.0-new") {
			t.Fatalf("new connection %d after the drain went to %q, want B", i, reply)
		}
	}
	fmt.Fprint(held, "still here\n")
	if line, err := r.ReadString('\n'); err != nil || line != "still here\n" {
		t.Fatalf("the connection established before the drain: %q %v", line, err)
	}

	// A wrong token from the page changes nothing.
	ready := fmt.Sprintf(`button[data-act="target"][data-target=%q][data-state="ready"]`, a)
	var result string
	if err := chromedp.Do(ctx, chromedp.SetValue("#token", "wrong-token-0123456789"), chromedp.Click(ready)); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 20*time.Second, func() bool {
		result, _ = chromedp.Run(ctx, chromedp.Text("#result"))
		return strings.Contains(result, "refused")
	}, "the page did not report the refusal: %q", testnet.Later(func() string { return result }))
	if s := state(ctx, a); s != "DRAIN/operator" {
		t.Fatalf("a wrong token changed A to %q", s)
	}

	// A page of another origin (another port) that knows the token tries
	// both CSRF routes: a fetch with the header (its CORS preflight gets no
	// CORS answer, so it is never sent) and, failing that, a plain form
	// POST (no header; its Origin and Sec-Fetch-Site are refused).
	csrf(t, ctx, metricsAddr, a)
	if s := state(ctx, a); s != "DRAIN/operator" {
		t.Fatalf("a page of another origin changed A to %q", s)
	}

	if dir := os.Getenv("PROTOPLEX_STATUS_SCREENSHOTS"); dir != "" {
		for i := range 6 { // some traffic for the rates
			exchangeWith(data, fmt.Sprintf("SSH-2.0-traffic-%d\r\n", i))
		}
		screenshots(t, ctx, page, dir)
	}

	// JavaScript off: the page still shows every target's state.
	noJS, cancel := chromedp.NewContext(ctx)
	defer cancel()
	if err := chromedp.Do(noJS, cdpCall(emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}),
		chromedp.Navigate(page)); err != nil {
		t.Fatalf("the page without JavaScript: %v", err)
	}
	text, err := chromedp.Run(noJS, chromedp.Text("main"))
	if err != nil {
		t.Fatal(err)
	}
	live, err := chromedp.Run(noJS, chromedp.Text("#live"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{a, b, c, "DRAIN", "operator", "DOWN", "UP", "Identification", "not distributed"} {
		if !strings.Contains(text, want) {
			t.Errorf("without JavaScript the page lacks %q:\n%s", want, text)
		}
	}
	if !strings.Contains(live, "static page") {
		t.Errorf("without JavaScript the page claims to be live: %q", live)
	}
	if err := chromedp.Do(noJS, chromedp.Navigate(page+"?problems=1")); err != nil {
		t.Fatal(err)
	}
	filtered, err := chromedp.Run(noJS, chromedp.Text("main"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(filtered, b) || !strings.Contains(filtered, c) || !strings.Contains(filtered, a) {
		t.Errorf("?problems=1 without JavaScript shows the wrong targets:\n%s", filtered)
	}
}

// csrf loads an attacker's page, served from another port of 127.0.0.1,
// that tries to set target of SSH ready on metricsAddr, and waits until
// its form POST got the status port's answer: the refusal.
func csrf(t *testing.T, parent context.Context, metricsAddr, target string) {
	t.Helper()
	action := "http://" + metricsAddr + "/status/target"
	evil := testnet.Listen(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<!DOCTYPE html><title>evil</title>
<form id="f" method="POST" action=%q><input name="route" value="SSH"><input name="target" value=%q><input name="state" value="ready"></form>
<script>
fetch(%q, {method: "POST", headers: {"X-Protoplex-Token": %q, "Content-Type": "application/x-www-form-urlencoded"},
  body: "route=SSH&target=" + encodeURIComponent(%q) + "&state=ready"})
  .then(() => { document.title = "fetch went through"; }, () => { document.getElementById("f").submit(); });
</script>`, action, target, action, statusToken, target)
	})}
	go srv.Serve(evil)
	t.Cleanup(func() { srv.Close() })
	tab, cancel := chromedp.NewContext(parent)
	defer cancel()
	if err := chromedp.Do(tab, chromedp.Navigate("http://"+evil.Addr().String()+"/")); err != nil {
		t.Fatalf("the attacker's page: %v", err)
	}
	var body, title string
	testnet.Eventually(t, 20*time.Second, func() bool {
		title, _ = chromedp.Run(tab, chromedp.Title())
		body, _ = chromedp.Run(tab, chromedp.Text("body"))
		return title == "fetch went through" || strings.Contains(body, "cross-origin")
	}, "the attacker's form never got an answer: title %q, body %q", testnet.Later(func() string { return title }), testnet.Later(func() string { return body }))
	if title == "fetch went through" {
		t.Fatal("a cross-origin fetch carrying the token was answered")
	}
}

// startBrowser starts headless Chromium for the test (as root it needs
// --no-sandbox) and returns a tab's context; it is stopped at cleanup.
// A Chromium that cannot start skips the test (fails under
// PROTOPLEX_REQUIRE_PEERS=1) with the reason.
func startBrowser(t *testing.T, path string) context.Context {
	t.Helper()
	opts := append([]chromedp.ExecAllocatorOption(nil),
		chromedp.ExecPath(path),
		chromedp.Flag("headless", "new"),
		chromedp.NoSandbox,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.WindowSize(1400, 1000),
	)
	// Chromium's own start on a loaded machine failed once in CI (it
	// exited before it served DevTools, nothing of ours involved): a
	// start is tried three times, each failure logged.
	var err error
	for try := 1; try <= 3; try++ {
		actx, acancel := chromedp.NewExecAllocator(context.Background(), append(opts, chromedp.Flag("user-data-dir", t.TempDir()))...)
		ctx, cancel := chromedp.NewContext(actx)
		ctx, tcancel := context.WithTimeout(ctx, 2*time.Minute)
		if err = chromedp.Do(ctx); err == nil {
			t.Cleanup(func() { tcancel(); cancel(); acancel() })
			return ctx
		}
		tcancel()
		cancel()
		acancel()
		t.Logf("chromium start %d failed: %v", try, err)
	}
	if os.Getenv("PROTOPLEX_REQUIRE_PEERS") == "1" {
		t.Fatalf("chromium cannot start: %v", err)
	}
	t.Skipf("chromium cannot start: %v", err)
	return nil
}

// cdpCall is a DevTools protocol command as an action.
func cdpCall[P, R any](c cdp.Command[P, R], params P) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, c, params)
		return err
	})
}

// discard runs a and drops its value.
func discard[T any](a chromedp.Action[T]) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := a(ctx, t)
		return err
	})
}

// screenshots writes the page in light and dark mode (prefers-color-scheme).
func screenshots(t *testing.T, ctx context.Context, page, dir string) {
	t.Helper()
	for _, scheme := range []string{"light", "dark"} {
		err := chromedp.Do(ctx,
			cdpCall(emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}}}),
			chromedp.Navigate(page), chromedp.WaitVisible("#admin"),
			chromedp.Sleep(1500*time.Millisecond)) // a screenshot stimulus: two polls, so the rates show
		if err != nil {
			t.Fatalf("screenshot %s: %v", scheme, err)
		}
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", scheme, err)
		}
		testnet.WriteFile(t, filepath.Join(dir, "status-"+scheme+".png"), string(png))
	}
}

// checkClusterStatus: the status snapshot of a node shows the cluster: its
// id, etcd connected, the three nodes and the discovered service.
func checkClusterStatus(t *testing.T, pm *protoplex.ProtocolManager, id string) {
	t.Helper()
	if err := pm.ServeMetrics("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + pm.MetricsAddr() + "/status.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s struct {
		Cluster struct {
			Distributed   bool   `json:"distributed"`
			NodeID        string `json:"node_id"`
			EtcdConnected bool   `json:"etcd_connected"`
			Nodes         int    `json:"nodes"`
			Services      int    `json:"services"`
			Members       []struct {
				ID string `json:"id"`
			} `json:"members"`
		} `json:"cluster"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	if c := s.Cluster; !c.Distributed || c.NodeID != id || !c.EtcdConnected || c.Nodes != 3 || c.Services != 1 || len(c.Members) != 3 {
		t.Fatalf("/status.json cluster = %+v", c)
	}
	if !slices.ContainsFunc(s.Cluster.Members, func(m struct {
		ID string `json:"id"`
	}) bool {
		return m.ID == id
	}) {
		t.Fatalf("/status.json cluster members %+v lack this node %s", s.Cluster.Members, id)
	}
}
