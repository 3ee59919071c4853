package logging

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
)

// Switch is a slog.Handler whose format (text or JSON) and level can change
// while loggers built on it are in use, so that a reload applies
// server.log_format and server.log_level to every line that follows.
// Handlers derived with WithAttrs/WithGroup follow the switch too.
type Switch struct {
	st    *switchState
	ops   []op // attrs and groups of a derived handler, in order
	cache *derivedCache
}

// switchState is shared by a Switch and every handler derived from it.
type switchState struct {
	w     io.Writer
	level slog.LevelVar
	base  atomic.Pointer[generation]
}

// generation is one base handler; derived handlers rebuild theirs when it
// changes.
type generation struct {
	format string
	h      slog.Handler
}

type op struct {
	group string
	attrs []slog.Attr
}

type derivedCache struct {
	mu  sync.Mutex
	gen *generation
	h   slog.Handler
}

// NewSwitch returns a handler writing to w in format ("json", else text) at
// level (as slog.Level parses it: "debug", "warn"...; "" is info).
func NewSwitch(w io.Writer, format, level string) *Switch {
	s := &Switch{st: &switchState{w: w}, cache: &derivedCache{}}
	s.Set(format, level)
	return s
}

// Set switches to format and level; lines logged after it returns use them.
func (s *Switch) Set(format, level string) {
	l := slog.LevelInfo
	_ = l.UnmarshalText([]byte(level)) // validated with the configuration
	s.st.level.Set(l)
	format = strings.ToLower(format)
	if format != "json" {
		format = "text"
	}
	if g := s.st.base.Load(); g != nil && g.format == format {
		return
	}
	opts := &slog.HandlerOptions{Level: &s.st.level}
	var h slog.Handler = slog.NewTextHandler(s.st.w, opts)
	if format == "json" {
		h = slog.NewJSONHandler(s.st.w, opts)
	}
	s.st.base.Store(&generation{format: format, h: h})
}

// JSON reports whether the switch writes JSON now.
func (s *Switch) JSON() bool { return s.st.base.Load().format == "json" }

// Enabled implements slog.Handler.
func (s *Switch) Enabled(_ context.Context, l slog.Level) bool { return l >= s.st.level.Level() }

// Handle implements slog.Handler.
func (s *Switch) Handle(ctx context.Context, r slog.Record) error {
	return s.current().Handle(ctx, r)
}

// WithAttrs implements slog.Handler.
func (s *Switch) WithAttrs(attrs []slog.Attr) slog.Handler {
	return s.derive(op{attrs: attrs})
}

// WithGroup implements slog.Handler.
func (s *Switch) WithGroup(name string) slog.Handler {
	if name == "" {
		return s
	}
	return s.derive(op{group: name})
}

func (s *Switch) derive(o op) *Switch {
	return &Switch{st: s.st, ops: append(append([]op(nil), s.ops...), o), cache: &derivedCache{}}
}

// current is the base handler with s's attrs and groups applied, rebuilt
// once per format change.
func (s *Switch) current() slog.Handler {
	g := s.st.base.Load()
	if len(s.ops) == 0 {
		return g.h
	}
	c := s.cache
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != g {
		h := g.h
		for _, o := range s.ops {
			if o.group != "" {
				h = h.WithGroup(o.group)
			} else {
				h = h.WithAttrs(o.attrs)
			}
		}
		c.gen, c.h = g, h
	}
	return c.h
}
