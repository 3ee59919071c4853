package routing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/metrics"
	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/protocols"
)

var discard = slog.New(slog.DiscardHandler)

func TestLabel(t *testing.T) {
	tls := protocols.NewTLSProtocol("t:1")
	if got := Label(tls); got != "TLS" {
		t.Errorf("no conditions: %q", got)
	}
	tls.SNI = []string{"a.example", "*.b.example"}
	tls.ALPN = []string{"h2"}
	if got := Label(tls); got != "TLS[sni=a.example,*.b.example;alpn=h2]" {
		t.Errorf("sni and alpn: %q", got)
	}
	tls.SNI = []string{"a", "b", "c", "d", "e", "f"}
	if got := Label(tls); got != "TLS[sni=a,b,c,d,+2 more;alpn=h2]" {
		t.Errorf("long sni list: %q", got)
	}
	http := protocols.NewHTTPProtocol("h:1")
	http.Hosts = []string{"w.example"}
	if got := Label(http); got != "HTTP[host=w.example]" {
		t.Errorf("host: %q", got)
	}
}

// build commits protos over old and returns the plan's changes and the
// new table.
func build(t *testing.T, st *metrics.Stats, old *Table, protos ...*protocols.Protocol) (Changes, *Table) {
	t.Helper()
	plan, err := Build(protos, 0, old, st, discard)
	if err != nil {
		t.Fatal(err)
	}
	c := plan.Changes()
	next := plan.Commit(context.Background())
	t.Cleanup(next.Close)
	return c, next
}

// TestChanges: a reload names the routes it adds, removes and changes
// (label and target, what changed), two routes of one protocol apart by
// their conditions, and a reload that changes no route says so.
func TestChanges(t *testing.T) {
	st := metrics.New()
	sni := func(name, target string) *protocols.Protocol {
		p := protocols.NewTLSProtocol(target)
		p.SNI = []string{name}
		return p
	}
	c, first := build(t, st, nil, protocols.NewSSHProtocol("s:1"), sni("a.example", "a:1"), sni("b.example", "b:1"))
	if want := []string{"SSH->s:1", "TLS[sni=a.example]->a:1", "TLS[sni=b.example]->b:1"}; strings.Join(c.Added, " ") != strings.Join(want, " ") || c.Removed != nil || c.Changed != nil {
		t.Fatalf("first configuration: %+v", c)
	}

	redis := protocols.NewRedisProtocol("r:1")
	ssh := protocols.NewSSHProtocol("s:2")
	ssh.Balance = "first"
	c, next := build(t, st, first, ssh, sni("a.example", "a:1"), redis)
	if strings.Join(c.Added, " ") != "Redis->r:1" || strings.Join(c.Removed, " ") != "TLS[sni=b.example]->b:1" ||
		strings.Join(c.Changed, " ") != "SSH->s:2 (was s:1, balance)" {
		t.Fatalf("reload: %+v", c)
	}

	var buf testnet.Buffer
	c.Log(slog.New(slog.NewTextHandler(&buf, nil)))
	if want := `msg="configuration applied" routes_added=[Redis->r:1] routes_removed="[TLS[sni=b.example]->b:1]" routes_changed="[SSH->s:2 (was s:1, balance)]"`; !strings.Contains(buf.String(), want) {
		t.Errorf("log line %q, want %s", buf.String(), want)
	}

	c, _ = build(t, st, next, ssh, sni("a.example", "a:1"), redis)
	if c.Added != nil || c.Removed != nil || c.Changed != nil {
		t.Fatalf("same configuration again: %+v", c)
	}
	buf = testnet.Buffer{}
	c.Log(slog.New(slog.NewTextHandler(&buf, nil)))
	if !strings.Contains(buf.String(), `msg="configuration applied, no route or listener changed"`) {
		t.Errorf("log line %q", buf.String())
	}
}

// TestBackendUpFollowsRoutes: every target of a route with health checks
// has a backend_up series from the commit, labelled with its route, so two
// routes of one protocol that share a target are two series; a route
// without checks has none (nothing watches it). The series of a route a
// reload removes go at that commit; the others stay.
func TestBackendUpFollowsRoutes(t *testing.T) {
	st := metrics.New()
	checks := protocols.HealthConfig{Interval: time.Hour} // one check each, at the start: "x:1" stays up until 3 fail
	a := protocols.NewTLSProtocol("x:1")
	a.SNI, a.Health = []string{"a.example"}, checks
	b := protocols.NewTLSProtocol("x:1,y:1")
	b.SNI, b.Health = []string{"b.example"}, checks
	_, first := build(t, st, nil, a, b, protocols.NewSSHProtocol("s:1"))
	want := []string{
		"protoplex_backend_up{protocol=TLS,route=TLS[sni=a.example],target=x:1}",
		"protoplex_backend_up{protocol=TLS,route=TLS[sni=b.example],target=x:1}",
		"protoplex_backend_up{protocol=TLS,route=TLS[sni=b.example],target=y:1}",
	}
	if got := upSeries(t, st); len(got) != len(want) {
		t.Fatalf("backend_up series %v, want %v", got, want)
	}
	for _, s := range want {
		if v, ok := upSeries(t, st)[s]; !ok || v != 1 {
			t.Fatalf("%s = %v (present %v): %v", s, v, ok, upSeries(t, st))
		}
	}
	build(t, st, first, a) // TLS b.example (x:1 and y:1) and SSH removed
	got := upSeries(t, st)
	if len(got) != 1 || got[want[0]] != 1 {
		t.Fatalf("after the reload: %v", got)
	}
}

// TestLabelsBounded: a route's label shows at most labelNames values of a
// condition and counts the rest, and two routes whose labels would be the
// same are told apart by "#2", in logs and metrics alike.
func TestLabelsBounded(t *testing.T) {
	st := metrics.New()
	names := make([]string, 1000)
	for i := range names {
		names[i] = fmt.Sprintf("n%d.example", i)
	}
	a := protocols.NewTLSProtocol("x:1")
	a.SNI = names
	b := protocols.NewTLSProtocol("y:1")
	b.SNI = append(slices.Clone(names[:4]), "other.example")
	_, rt := build(t, st, nil, a, b)
	if got := rt.Entries[0].Label; got != "TLS[sni=n0.example,n1.example,n2.example,n3.example,+996 more]" {
		t.Errorf("label of 1000 names: %q", got)
	}
	if got := rt.Entries[1].Label; got != "TLS[sni=n0.example,n1.example,n2.example,n3.example,+1 more]" {
		t.Errorf("label of 5 names: %q", got)
	}
	c := protocols.NewTLSProtocol("z:1")
	c.SNI = slices.Clone(names[:5])
	d := protocols.NewTLSProtocol("z:2")
	d.SNI = append(slices.Clone(names[:4]), "x.example")
	_, rt = build(t, st, nil, c, d)
	if rt.Entries[0].Label == rt.Entries[1].Label || !strings.HasSuffix(rt.Entries[1].Label, "#2") {
		t.Errorf("labels %q and %q", rt.Entries[0].Label, rt.Entries[1].Label)
	}
}

func upSeries(t *testing.T, st *metrics.Stats) map[string]float64 {
	t.Helper()
	families, err := st.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "protoplex_backend_up" {
			continue
		}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			out["protoplex_backend_up{"+strings.Join(labels, ",")+"}"] = m.GetGauge().GetValue()
		}
	}
	return out
}

// TestDialFailuresLogged: each failed dial logs protocol, target and error
// at WARN, at most DialLogsPerSecond a second per target (another target
// has its own budget); the rest are counted in a "suppressed" line.
func TestDialFailuresLogged(t *testing.T) {
	var buf testnet.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	observed := 0
	dial := logDials("SSH", "SSH", func(string, time.Duration, error) { observed++ }, log)
	dial("a:1", time.Millisecond, nil)
	if buf.String() != "" {
		t.Fatalf("a dial that worked logged: %s", buf.String())
	}
	// Within one second, as far as the test can tell: the count below
	// allows the loop to cross one boundary.
	for range 50 {
		dial("a:1", time.Millisecond, errors.New("connection refused"))
	}
	dial("b:1", time.Millisecond, errors.New("no route to host"))
	if observed != 52 {
		t.Errorf("the metrics observer saw %d dials, want 52", observed)
	}
	out := buf.String()
	a := strings.Count(out, `level=WARN msg="backend dial failed" protocol=SSH route=SSH target=a:1 err="connection refused"`)
	if a < 1 || a > 2*DialLogsPerSecond {
		t.Errorf("%d lines for a:1, want 1 to %d:\n%s", a, 2*DialLogsPerSecond, out)
	}
	if !strings.Contains(out, `msg="backend dial failed" protocol=SSH route=SSH target=b:1 err="no route to host"`) {
		t.Errorf("b:1's failure not logged beside a:1's:\n%s", out)
	}
}

// TestHealthTransitionsLogged: down at WARN, up at INFO, with protocol and
// target, after the metrics observer saw them.
func TestHealthTransitionsLogged(t *testing.T) {
	var buf testnet.Buffer
	var seen []bool
	state := logStates("Redis", "Redis", func(_ string, up bool) { seen = append(seen, up) }, slog.New(slog.NewTextHandler(&buf, nil)))
	state("r:1", false)
	state("r:1", true)
	out := buf.String()
	for _, want := range []string{
		`level=WARN msg="backend down: health checks fail" protocol=Redis route=Redis target=r:1`,
		`level=INFO msg="backend up: health checks pass" protocol=Redis route=Redis target=r:1`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %s in:\n%s", want, out)
		}
	}
	if len(seen) != 2 || seen[0] || !seen[1] {
		t.Errorf("metrics observer saw %v", seen)
	}
}

// TestListenChanges: the addresses a reload adds and removes are named in
// the "configuration applied" line; a reload that changes neither a route
// nor a listener says so.
func TestListenChanges(t *testing.T) {
	var buf testnet.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	var c Changes
	c.ListenChanges([]string{":1", ":2"}, []string{":2", ":3", "unix:/run/p.sock"})
	c.Log(log)
	if want := `msg="configuration applied" listeners_added="[:3 unix:/run/p.sock]" listeners_removed=[:1]`; !strings.Contains(buf.String(), want) {
		t.Errorf("%q, want %s", buf.String(), want)
	}
	var same testnet.Buffer
	c = Changes{}
	c.ListenChanges([]string{":1"}, []string{":1"})
	c.Log(slog.New(slog.NewTextHandler(&same, nil)))
	if !strings.Contains(same.String(), `msg="configuration applied, no route or listener changed"`) {
		t.Errorf("%q", same.String())
	}
}
