package config

import (
	"strings"
	"testing"
)

// TestDataPlaneKeys: server.data_plane takes events (the default) or
// goroutines, spelt exactly; server.event_loops takes 0 (one per CPU) to 64.
// Each wrong value is an error at its line naming what to write.
func TestDataPlaneKeys(t *testing.T) {
	for _, tc := range []struct {
		yaml  string
		plane string
		loops int
	}{
		{"", DataPlaneEvents, 0},
		{"server:\n  data_plane: \"\"\n", DataPlaneEvents, 0},
		{"server:\n  data_plane: events\n", DataPlaneEvents, 0},
		{"server:\n  data_plane: goroutines\n", DataPlaneGoroutines, 0},
		{"server:\n  event_loops: 1\n", DataPlaneEvents, 1},
		{"server:\n  data_plane: events\n  event_loops: 64\n", DataPlaneEvents, 64},
		{"server:\n  data_plane: goroutines\n  event_loops: 8\n", DataPlaneGoroutines, 8},
	} {
		c, err := Parse([]byte(tc.yaml+ssh), "c.yaml")
		if err != nil {
			t.Errorf("%q: %v", tc.yaml, err)
			continue
		}
		if c.Server.DataPlane != tc.plane || c.Server.EventLoops != tc.loops {
			t.Errorf("%q: data_plane %q, event_loops %d; want %q, %d", tc.yaml, c.Server.DataPlane, c.Server.EventLoops, tc.plane, tc.loops)
		}
	}
	for _, tc := range []struct{ yaml, want string }{
		{"server:\n  data_plane: epoll\n", `c.yaml:2: server.data_plane: "epoll": want events or goroutines`},
		{"server:\n  data_plane: event\n", `c.yaml:2: server.data_plane: "event": want events or goroutines (did you mean "events"?)`},
		{"server:\n  data_plane: Goroutines\n", `c.yaml:2: server.data_plane: "Goroutines": want events or goroutines (did you mean "goroutines"?)`},
		{"server:\n  data_plane: 1\n", `c.yaml:2: server.data_plane: "1": want events or goroutines`},
		{"server:\n  data_plane: [events]\n", "c.yaml:2: server.data_plane: want a string, got a list"},
		{"server:\n  data_plane: {loops: 4}\n", "c.yaml:2: server.data_plane: want a string, got a mapping"},
		{"server:\n  event_loops: 65\n", "c.yaml:2: server.event_loops: 65 is outside [0, 64]"},
		{"server:\n  event_loops: -1\n", "c.yaml:2: server.event_loops: -1 is outside [0, 64]"},
		{"server:\n  event_loops: four\n", `c.yaml:2: server.event_loops: want a number, got "four"`},
		{"server:\n  event_loops: 1.5\n", "c.yaml:2: server.event_loops: want a whole number, got 1.5"},
		{"server:\n  event_loops: [4]\n", "c.yaml:2: server.event_loops: want a number, got a list"},
		{"server:\n  event_loop: 4\n", `c.yaml:2: server: unknown key "event_loop" (did you mean "event_loops"?)`},
	} {
		_, err := Parse([]byte(tc.yaml+ssh), "c.yaml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

// TestDataPlaneGoOptions: the Go options set the same fields and are held to
// the same values, named by their Go names; the defaults a manager starts
// with pass.
func TestDataPlaneGoOptions(t *testing.T) {
	if err := CheckServer(DefaultServer()); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if got := DefaultServer().DataPlane; got != DataPlaneEvents {
		t.Errorf("default data plane %q, want %q", got, DataPlaneEvents)
	}
	for _, tc := range []struct {
		edit func(*Server)
		want string
	}{
		{func(s *Server) { s.DataPlane = "threads" }, `DataPlane: "threads": want events or goroutines`},
		{func(s *Server) { s.EventLoops = 65 }, "EventLoops: 65 is outside [0, 64]"},
		{func(s *Server) { s.EventLoops = -1 }, "EventLoops: -1 is outside [0, 64]"},
	} {
		s := DefaultServer()
		tc.edit(&s)
		if err := CheckServer(s); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
	for _, p := range []string{"", DataPlaneEvents, DataPlaneGoroutines} {
		s := DefaultServer()
		s.DataPlane, s.EventLoops = p, 64
		if err := CheckServer(s); err != nil {
			t.Errorf("DataPlane %q, EventLoops 64: %v", p, err)
		}
	}
}
