package guard

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// RateLimitedLogger writes at most perSecond lines a second; the rest are
// counted and reported in one "suppressed" line, so a flood of refusals cannot
// become a flood of log lines.
type RateLimitedLogger struct {
	log       *slog.Logger
	perSecond int
	now       func() time.Time

	mu         sync.Mutex
	second     int64
	written    int
	suppressed int
}

// NewRateLimitedLogger wraps log.
func NewRateLimitedLogger(log *slog.Logger, perSecond int, now func() time.Time) *RateLimitedLogger {
	return &RateLimitedLogger{log: log, perSecond: perSecond, now: now}
}

// Warn logs msg unless this second's budget is spent.
func (l *RateLimitedLogger) Warn(msg string, args ...any) {
	if !l.log.Enabled(context.Background(), slog.LevelWarn) {
		return
	}
	sec := l.now().Unix()
	l.mu.Lock()
	var suppressed int
	if sec != l.second {
		suppressed, l.suppressed = l.suppressed, 0
		l.second, l.written = sec, 0
	}
	ok := l.written < l.perSecond
	if ok {
		l.written++
	} else {
		l.suppressed++
	}
	l.mu.Unlock()
	if suppressed > 0 {
		l.log.Warn("log lines suppressed by rate limit", "count", suppressed)
	}
	if ok {
		l.log.Warn(msg, args...)
	}
}
