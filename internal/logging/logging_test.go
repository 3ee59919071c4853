package logging

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/identify"
	"github.com/darkit/protoplex/internal/proxy"
	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/protocols"
)

var client = &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 40000}

// TestDurationFormats: text shows a Go duration, JSON a number of seconds.
func TestDurationFormats(t *testing.T) {
	var text, js testnet.Buffer
	slog.New(slog.NewTextHandler(&text, nil)).Info("x", "duration", Duration(1500*time.Millisecond))
	slog.New(slog.NewJSONHandler(&js, nil)).Info("x", "duration", Duration(1500*time.Millisecond))
	if !strings.Contains(text.String(), " duration=1.5s") {
		t.Errorf("text: %s", text.String())
	}
	var line struct{ Duration any }
	if err := json.Unmarshal([]byte(js.String()), &line); err != nil || line.Duration != 1.5 {
		t.Errorf("json: %s (%v)", js.String(), err)
	}
}

// TestAccessLevels: with access_log the line is INFO; without, DEBUG, so
// an INFO logger writes nothing.
func TestAccessLevels(t *testing.T) {
	for _, tc := range []struct {
		accessLog bool
		level     slog.Level
		want      string
	}{
		{true, slog.LevelInfo, "level=INFO"},
		{false, slog.LevelInfo, ""},
		{false, slog.LevelDebug, "level=DEBUG"},
	} {
		var buf testnet.Buffer
		a := NewAccess(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tc.level})), AccessMode{Close: tc.accessLog}, client)
		a.Refused("max_connections")
		a.Log()
		if got := buf.String(); tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
			t.Errorf("access_log %v at %v: %q", tc.accessLog, tc.level, got)
		}
	}
}

// TestOpenLine: the open line is INFO with access_log and access_log_open,
// DEBUG otherwise (so log_level debug shows it whatever the keys say), and
// carries what the closing line says of the route and the target.
func TestOpenLine(t *testing.T) {
	for _, tc := range []struct {
		mode  AccessMode
		level slog.Level
		want  string
	}{
		{AccessMode{Close: true, Open: true}, slog.LevelInfo, "level=INFO"},
		{AccessMode{Close: true}, slog.LevelInfo, ""},
		{AccessMode{Open: true}, slog.LevelInfo, ""}, // open lines belong to the access log
		{AccessMode{}, slog.LevelDebug, "level=DEBUG"},
		{AccessMode{Close: true}, slog.LevelDebug, "level=DEBUG"},
	} {
		var buf testnet.Buffer
		a := NewAccess(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tc.level})), tc.mode, client)
		a.Routed(&protocols.Protocol{Name: "SSH"}, "SSH", identify.Result{N: 9}, nil)
		a.Opened("10.0.0.1:22")
		got := buf.String()
		if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
			t.Errorf("%+v at %v: %q", tc.mode, tc.level, got)
		}
		if want := ` msg="connection opened" client=192.0.2.7:40000 protocol=SSH route=SSH target=10.0.0.1:22` + "\n"; tc.want != "" && !strings.HasSuffix(got, want) {
			t.Errorf("%+v: %q, want it to end with %q", tc.mode, got, want)
		}
	}
}

// TestAccessLine: every attribute a forwarded, an unidentified and a
// failed connection has.
func TestAccessLine(t *testing.T) {
	var buf testnet.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))

	a := NewAccess(log, AccessMode{Close: true}, client)
	a.Routed(&protocols.Protocol{Name: "TLS"}, "TLS[sni=a.example]", identify.Result{N: 517}, nil)
	a.Forwarded("10.0.0.1:443", proxy.Stats{Up: 600, Down: 4000, Reason: proxy.Done})
	a.Log()
	a = NewAccess(log, AccessMode{Close: true}, client)
	a.Unidentified(identify.Result{N: 12, Failure: identify.NoMatch})
	a.Log()
	a = NewAccess(log, AccessMode{Close: true}, client)
	a.Routed(&protocols.Protocol{Name: "SSH"}, "SSH", identify.Result{N: 9, Fallback: true, Failure: identify.NoMatch}, nil)
	a.DialFailed(errors.New("connection refused"))
	a.Log()
	a = NewAccess(log, AccessMode{Close: true}, client)
	a.Routed(&protocols.Protocol{Name: "Redis", Handler: func(net.Conn) {}}, "Redis", identify.Result{N: 6}, nil)
	a.Log()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	for i, want := range []struct{ prefix, suffix string }{
		{` protocol=TLS route="TLS[sni=a.example]" target=10.0.0.1:443 up=600 down=4000 duration=`, " close=done"},
		{" up=12 down=0 duration=", " close=unidentified reason=no_match"},
		{" protocol=SSH route=SSH fallback=true up=9 down=0 duration=", ` close=dial_error err="connection refused"`},
		{" protocol=Redis route=Redis up=6 down=0 duration=", " close=handled"},
	} {
		const start = `level=INFO msg="connection closed" client=192.0.2.7:40000`
		if i >= len(lines) || !strings.Contains(lines[i], start+want.prefix) || !strings.HasSuffix(lines[i], want.suffix) {
			t.Errorf("line %d: want %s%s...%s in\n%s", i, start, want.prefix, want.suffix, buf.String())
		}
	}
}

// TestAccessOffCostsNothing: a record whose line is not written allocates
// nothing, whatever the connection path stores in it.
func TestAccessOffCostsNothing(t *testing.T) {
	log := slog.New(slog.NewTextHandler(&testnet.Buffer{}, nil)) // INFO: the DEBUG line is off
	p := &protocols.Protocol{Name: "X"}
	res := identify.Result{N: 3, Route: &identify.Route{Name: "X"}}
	first := []byte("abc")
	err := errors.New("refused")
	allocs := testing.AllocsPerRun(100, func() {
		a := NewAccess(log, AccessMode{}, client)
		a.Routed(p, "X", res, first)
		a.DialFailed(err)
		a.Opened("t:1")
		a.Forwarded("t:1", proxy.Stats{Up: 1, Down: 2})
		a.Log()
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per connection with the access log off", allocs)
	}
}
