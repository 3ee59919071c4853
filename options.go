package protoplex

import (
	"log/slog"
	"time"

	"github.com/darkit/protoplex/internal/config"
	"github.com/darkit/protoplex/internal/listen"
)

// Defaults of the server settings (docs/config.md lists them with their
// bounds).
const (
	DefaultMaxConnections          = config.DefaultMaxConnections
	DefaultBufferSize              = config.DefaultBufferSize
	DefaultIdentifyTimeout         = config.DefaultIdentifyTimeout
	DefaultIdentifyMinBytes        = config.DefaultIdentifyMinBytes
	DefaultCacheTTL                = config.DefaultCacheTTL
	DefaultDialTimeout             = config.DefaultDialTimeout
	DefaultGracefulShutdownTimeout = config.DefaultGracefulShutdownTimeout
	DefaultServerFirstWait         = config.DefaultServerFirstWait
	// DefaultSettleWait: a match is taken after this long while only
	// higher-ranked byte-pattern protocols are undecided (never while a
	// built-in detector or a route condition still waits for its bytes).
	DefaultSettleWait = 300 * time.Millisecond
)

// Option configures a ProtocolManager. Options set the same server:
// settings as the file and are checked against the same bounds.
type Option func(*options)

type options struct {
	server    config.Server
	logger    *slog.Logger
	inherited *listen.Inherited
	holdUDP   bool // WithHeldUDP
	// now is the clock an upgrade's old side times the new process's
	// answers by (withUpgradeClock); time.Now unless a test sets it.
	now func() time.Time
}

// withUpgradeClock sets the clock MoveConnections measures the new
// process's answer to each batch by: a test makes an answer late without
// waiting for it.
func withUpgradeClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

func setServer(f func(*config.Server)) Option { return func(o *options) { f(&o.server) } }

// withServer sets every server: setting, as a file's block gives them.
func withServer(s config.Server) Option { return setServer(func(dst *config.Server) { *dst = s }) }

// WithMaxConnections caps concurrent connections (default 1024, 1 to 10,000,000). Connections
// over the cap are accepted and closed at once, counted as refused: queueing
// them would hold file descriptors for clients that may give up anyway.
func WithMaxConnections(n int) Option {
	return setServer(func(s *config.Server) { s.MaxConnections = n })
}

// WithBufferSize sets the identification buffer size (default 32 KiB, 512 B
// to 1 MiB). Each connection in identification holds one whole buffer, so
// MaxConnections × BufferSize bounds that memory.
func WithBufferSize(n int) Option { return setServer(func(s *config.Server) { s.BufferSize = n }) }

// WithIdentifyTimeout bounds the identification phase (default 15s, at most 10m).
func WithIdentifyTimeout(d time.Duration) Option {
	return setServer(func(s *config.Server) { s.IdentifyTimeout = d })
}

// WithIdentifyMinBytes bounds user byte-pattern protocols (MatchRegexes,
// MatchBytes windows, CustomValidator: they may never decide): once this many
// bytes are read while only they are undecided, decide with what is there
// (default 1024; must be > 0 and <= BufferSize). Built-in detectors and route
// conditions are not cut short by it: they decide when their handshake or
// header block is complete, within the buffer and the identify timeout.
func WithIdentifyMinBytes(n int) Option {
	return setServer(func(s *config.Server) { s.IdentifyMinBytes = n })
}

// WithCacheTTL sets the identification cache entry lifetime (default 5m, 0 off,
// at most 24h).
func WithCacheTTL(d time.Duration) Option {
	return setServer(func(s *config.Server) { s.CacheTTL = d })
}

// WithDialTimeout bounds dialing a backend, retries included (default 5s, at most 5m).
func WithDialTimeout(d time.Duration) Option {
	return setServer(func(s *config.Server) { s.DialTimeout = d })
}

// WithGracefulShutdownTimeout bounds the drain on shutdown (default 60s, at most 24h).
func WithGracefulShutdownTimeout(d time.Duration) Option {
	return setServer(func(s *config.Server) { s.GracefulShutdownTimeout = d })
}

// WithServerFirstWait: a client silent this long goes to the server-first
// protocol (FTP, SMTP), like sslh's on_timeout (default 1s, at most 10m).
func WithServerFirstWait(d time.Duration) Option {
	return setServer(func(s *config.Server) { s.ServerFirstWait = d })
}

// WithIdleTimeout closes forwarded connections idle this long (default 0: never,
// at most 30 days).
func WithIdleTimeout(d time.Duration) Option {
	return setServer(func(s *config.Server) { s.IdleTimeout = d })
}

// WithIdentifyReadTimeout bounds the wait for each next read during
// identification (default 0: only IdentifyTimeout applies; at most 10m). A client that
// trickles a byte now and then is cut at this gap, not at the overall deadline.
func WithIdentifyReadTimeout(d time.Duration) Option {
	return setServer(func(s *config.Server) { s.IdentifyReadTimeout = d })
}

// WithTCPKeepAlive turns on TCP keepalive probes on client connections,
// first after d of silence, then every d (default 0: off, as in HAProxy
// without clitcpka and sslh: it costs four setsockopt calls per connection).
// It detects clients that vanished without a FIN when no idle timeout is
// set. At most 32767s, the kernel's limit. Applies to listeners opened by
// RunServer and Listen.
func WithTCPKeepAlive(d time.Duration) Option {
	return setServer(func(s *config.Server) { s.TCPKeepAlive = d })
}

// WithDataPlane chooses how connections are served: "events" (the
// default: event loops, loops of them, 0 for one per CPU, on Linux; a
// goroutine per connection elsewhere) or "goroutines". Read at Serve.
func WithDataPlane(plane string, loops int) Option {
	return setServer(func(s *config.Server) { s.DataPlane, s.EventLoops = plane, loops })
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }
