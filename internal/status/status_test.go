package status

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/darkit/protoplex/internal/metrics"
)

const token = "s3cret-token-0123456789"

// recorder is the actions, recorded.
type recorder struct {
	mu    sync.Mutex
	calls []string
}

func (r *recorder) add(s string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, s)
	return nil
}
func (r *recorder) SetTarget(route, target, state string) error {
	return r.add("target " + route + " " + target + " " + state)
}
func (r *recorder) Unban(a netip.Addr) error { return r.add("unban " + a.String()) }
func (r *recorder) CloseConn(id uint64) error {
	if id == 404 {
		return fmt.Errorf("no live connection %d", id)
	}
	return r.add("close " + strconv.FormatUint(id, 10))
}
func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

func snapshot() *metrics.Status {
	return &metrics.Status{SchemaVersion: metrics.SchemaVersion, Admin: true,
		Routes: []metrics.RouteState{
			{Route: "SSH", Protocol: "SSH", Targets: []metrics.TargetState{
				{Route: "SSH", Protocol: "SSH", Target: "10.0.0.1:22", State: "up", Weight: 1},
				{Route: "SSH", Protocol: "SSH", Target: "10.0.0.2:22", State: "down", Weight: 1, Check: "fail", CheckError: "refused"},
			}},
			{Route: "TLS[sni=a.example]", Protocol: "TLS", SNI: []string{"a.example"}, Targets: []metrics.TargetState{
				{Route: "TLS[sni=a.example]", Protocol: "TLS", Target: "10.0.0.3:443", State: "drain", Held: true, Weight: 2},
			}},
		}}
}

// serve starts the handler on a loopback port and returns its URL and
// the actions' recorder.
func serve(t *testing.T, tok string) (string, *recorder) {
	t.Helper()
	rec := &recorder{}
	var port int
	srv := httptest.NewServer(Handler(Config{
		Snapshot: snapshot, Actions: rec, Token: []byte(tok),
		Bind: func() (string, int) { return "127.0.0.1", port },
		Log:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	port, _ = strconv.Atoi(u.Port())
	return srv.URL, rec
}

func do(t *testing.T, method, u string, form url.Values, hdr map[string]string) (int, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestActionsRefused: a GET of an action, a cross-origin POST (by Origin or
// Sec-Fetch-Site), a wrong or missing token, a Host naming another site
// (DNS rebinding) and an action while actions are off change nothing; the
// right token from no browser, or from this page's own origin, does.
func TestActionsRefused(t *testing.T) {
	base, rec := serve(t, token)
	u, _ := url.Parse(base)
	drain := url.Values{"route": {"SSH"}, "target": {"10.0.0.1:22"}, "state": {"drain"}}
	good := map[string]string{TokenHeader: token}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{TokenHeader: token}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	refused := []struct {
		name   string
		method string
		form   url.Values
		hdr    map[string]string
		code   int
	}{
		{"GET", http.MethodGet, nil, good, http.StatusMethodNotAllowed},
		{"GET with the query", http.MethodGet, nil, good, http.StatusMethodNotAllowed},
		{"no token", http.MethodPost, drain, nil, http.StatusForbidden},
		{"wrong token", http.MethodPost, drain, map[string]string{TokenHeader: token + "x"}, http.StatusForbidden},
		{"cross-origin", http.MethodPost, drain, with(map[string]string{"Origin": "http://evil.example"}), http.StatusForbidden},
		{"origin null", http.MethodPost, drain, with(map[string]string{"Origin": "null"}), http.StatusForbidden},
		{"cross-site fetch", http.MethodPost, drain, with(map[string]string{"Sec-Fetch-Site": "cross-site"}), http.StatusForbidden},
		{"same-site, other origin", http.MethodPost, drain, with(map[string]string{"Sec-Fetch-Site": "same-site"}), http.StatusForbidden},
		{"DNS rebinding", http.MethodPost, drain, with(map[string]string{"Host": "evil.example:" + u.Port()}), http.StatusMisdirectedRequest},
		{"other port", http.MethodPost, drain, with(map[string]string{"Host": "127.0.0.1:1"}), http.StatusMisdirectedRequest},
		{"body too large", http.MethodPost, url.Values{"route": {strings.Repeat("x", MaxActionBody)}}, good, http.StatusBadRequest},
	}
	for _, c := range refused {
		target := base + "/status/target"
		if c.name == "GET with the query" {
			target += "?" + drain.Encode()
		}
		code, body := do(t, c.method, target, c.form, c.hdr)
		if code != c.code {
			t.Errorf("%s: %d %s, want %d", c.name, code, body, c.code)
		}
	}
	if calls := rec.list(); len(calls) != 0 {
		t.Fatalf("refused requests acted: %v", calls)
	}
	for _, h := range []string{"evil.example:" + u.Port(), "localhost.evil.example:" + u.Port(), "127.0.0.1.nip.io:" + u.Port()} {
		for _, p := range []string{"/status", "/status.json", "/status.csv"} {
			if code, _ := do(t, http.MethodGet, base+p, nil, map[string]string{"Host": h}); code != http.StatusMisdirectedRequest {
				t.Errorf("GET %s with Host %s: %d, want 421", p, h, code)
			}
		}
	}

	// Allowed: no browser headers; this page's own origin; localhost.
	if code, body := do(t, http.MethodPost, base+"/status/target", drain, good); code != http.StatusOK {
		t.Fatalf("a good action: %d %s", code, body)
	}
	if code, body := do(t, http.MethodPost, base+"/status/unban", url.Values{"addr": {"192.0.2.1"}},
		with(map[string]string{"Origin": base, "Sec-Fetch-Site": "same-origin"})); code != http.StatusOK {
		t.Fatalf("an action from the page's own origin: %d %s", code, body)
	}
	if code, body := do(t, http.MethodPost, base+"/status/close", url.Values{"id": {"7"}},
		with(map[string]string{"Host": "localhost:" + u.Port()})); code != http.StatusOK {
		t.Fatalf("an action to localhost: %d %s", code, body)
	}
	if code, _ := do(t, http.MethodPost, base+"/status/close", url.Values{"id": {"404"}}, good); code != http.StatusNotFound {
		t.Fatalf("closing an unknown connection: %d, want 404", code)
	}
	if code, _ := do(t, http.MethodPost, base+"/status/unban", url.Values{"addr": {"not-an-ip"}}, good); code != http.StatusNotFound {
		t.Fatalf("unban of a bad address: %d, want 404", code)
	}
	want := []string{"target SSH 10.0.0.1:22 drain", "unban 192.0.2.1", "close 7"}
	if calls := rec.list(); !slices.Equal(calls, want) {
		t.Fatalf("actions %v, want %v", calls, want)
	}

	off, rec := serve(t, "")
	if code, _ := do(t, http.MethodPost, off+"/status/target", drain, good); code != http.StatusForbidden || len(rec.list()) != 0 {
		t.Fatalf("with actions off: %d, %v", code, rec.list())
	}
}

// TestViewsAndFilters: the page renders the targets without JavaScript,
// with the operator's hold shown; the filters work on every view; the CSV
// header is the field table.
func TestViewsAndFilters(t *testing.T) {
	base, _ := serve(t, token)
	code, page := do(t, http.MethodGet, base+"/status", nil, nil)
	if code != http.StatusOK {
		t.Fatalf("/status: %d", code)
	}
	for _, want := range []string{">UP<", ">DOWN<", ">DRAIN<", ">operator<", "TLS[sni=a.example]", "refused", `src="/status/assets/status.js"`} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	for _, a := range []string{"/status/assets/status.js", "/status/assets/status.css"} {
		if code, _ := do(t, http.MethodGet, base+a, nil, nil); code != http.StatusOK {
			t.Errorf("%s: %d", a, code)
		}
	}
	_, page = do(t, http.MethodGet, base+"/status?problems=1", nil, nil)
	if strings.Contains(page, "10.0.0.1:22") || !strings.Contains(page, "10.0.0.2:22") || !strings.Contains(page, "10.0.0.3:443") {
		t.Error("?problems=1 does not keep exactly the targets with a problem")
	}
	var s metrics.Status
	_, js := do(t, http.MethodGet, base+"/status.json?protocol=tls", nil, nil)
	if err := json.Unmarshal([]byte(js), &s); err != nil || len(s.Routes) != 1 || s.Routes[0].Protocol != "TLS" {
		t.Fatalf("/status.json?protocol=tls: %v %+v", err, s.Routes)
	}
	_, body := do(t, http.MethodGet, base+"/status.csv", nil, nil)
	rows, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	if err != nil || len(rows) != 4 {
		t.Fatalf("/status.csv: %v, %d rows", err, len(rows))
	}
	for i, f := range metrics.TargetFields {
		if rows[0][i] != f.Name {
			t.Fatalf("CSV column %d is %q, want %q", i, rows[0][i], f.Name)
		}
	}
	if rows[3][2] != "10.0.0.3:443" || rows[3][3] != "drain" || rows[3][4] != "1" {
		t.Fatalf("CSV row %v", rows[3])
	}
}

// TestDocumentedStatusFields: docs/status.md's field table lists exactly
// the fields of /status.json.
func TestDocumentedStatusFields(t *testing.T) {
	s := metrics.Status{Listeners: make([]metrics.Listener, 1), Routes: []metrics.RouteState{{Targets: make([]metrics.TargetState, 1)}}}
	s.Identify.Matched, s.Identify.Failures = make([]metrics.Count, 1), make([]metrics.Count, 1)
	s.Guard.Banned, s.Guard.TopSources = make([]metrics.Ban, 1), make([]metrics.Source, 1)
	s.UDP.Protocols, s.Connections.Listed = make([]metrics.UDPCount, 1), make([]metrics.Conn, 1)
	s.Cluster.Members = make([]metrics.ClusterMember, 1)
	s.Routes[0].SNI, s.Routes[0].ALPN, s.Routes[0].Host = []string{""}, []string{""}, []string{""}
	b, _ := json.Marshal(s)
	var m any
	json.Unmarshal(b, &m)
	var got []string
	for _, p := range jsonPaths(m, "") {
		got = append(got, strings.TrimSuffix(p, "[]")) // a list of strings is documented by its name
	}
	f, err := os.Open("../../docs/status.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var documented []string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			in = line == "## /status.json"
		}
		if in && strings.HasPrefix(line, "| `") {
			documented = append(documented, strings.Trim(strings.Split(line, "|")[1], " `"))
		}
	}
	slices.Sort(documented)
	for _, p := range got {
		if !slices.Contains(documented, p) {
			t.Errorf("field %s is in /status.json but not in docs/status.md", p)
		}
	}
	for _, p := range documented {
		if !slices.Contains(got, p) {
			t.Errorf("docs/status.md documents %s, which /status.json does not have", p)
		}
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct {
		kind string
		v    any
		want string
	}{
		{"seconds", 0.0123, "12 ms"}, {"seconds", 0.000085, "85 µs"}, {"seconds", 0.0, "0 s"}, {"seconds", 4.25, "4.2 s"}, {"seconds", 185.0, "3m05s"}, {"seconds", 7620.0, "2h07m"},
		{"seconds", 3*86400 + 4*3600.0, "3d04h"}, {"bytes", int64(512), "512 B"}, {"bytes/s", 1536.0, "1.5 KiB/s"},
		{"rate", 2.0, "2.0/s"}, {"state", "down", "DOWN"}, {"held", true, "operator"}, {"held", false, ""}, {"int", int64(3), "3"},
	} {
		if got := Format(c.kind, c.v); got != c.want {
			t.Errorf("Format(%s, %v) = %q, want %q", c.kind, c.v, got, c.want)
		}
	}
}
