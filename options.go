package protoplex

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Defaults, as documented in the seed.
const (
	DefaultMaxConnections          = 1024
	DefaultBufferSize              = 32 * 1024
	DefaultIdentifyTimeout         = 15 * time.Second
	DefaultIdentifyMinBytes        = 1024
	DefaultCacheTTL                = 5 * time.Minute
	DefaultDialTimeout             = 5 * time.Second
	DefaultGracefulShutdownTimeout = 60 * time.Second
	DefaultServerFirstWait         = time.Second
	// DefaultSettleWait: a match is taken after this long while only
	// higher-ranked byte-pattern protocols are undecided (never while a
	// built-in detector or a route condition still waits for its bytes).
	DefaultSettleWait = 300 * time.Millisecond
)

// Option configures a ProtocolManager.
type Option func(*options)

type options struct {
	maxConnections   int
	bufferSize       int
	identifyTimeout  time.Duration
	identifyMinBytes int
	cacheTTL         time.Duration
	dialTimeout      time.Duration
	gracefulTimeout  time.Duration
	serverFirstWait  time.Duration
	settleWait       time.Duration
	idleTimeout      time.Duration
	readTimeout      time.Duration
	tcpKeepAlive     time.Duration
	logger           *slog.Logger
}

func defaultOptions() options {
	return options{
		maxConnections:   DefaultMaxConnections,
		bufferSize:       DefaultBufferSize,
		identifyTimeout:  DefaultIdentifyTimeout,
		identifyMinBytes: DefaultIdentifyMinBytes,
		cacheTTL:         DefaultCacheTTL,
		dialTimeout:      DefaultDialTimeout,
		gracefulTimeout:  DefaultGracefulShutdownTimeout,
		serverFirstWait:  DefaultServerFirstWait,
		settleWait:       DefaultSettleWait,
	}
}

// Bounds of the server settings, shared by the Go options and the YAML file
// (docs/config.md lists them). They keep every value inside what the process
// can honour: the identification buffer is allocated whole per connection in
// identification, Linux refuses keepalive idle times over 32767 s, and beyond
// the upper durations a value is a typo rather than a policy.
const (
	maxMaxConnections      = 10_000_000
	minBufferSize          = 512
	maxBufferSize          = 1 << 20
	maxIdentifyTimeout     = 10 * time.Minute
	maxCacheTTL            = 24 * time.Hour
	maxDialTimeout         = 5 * time.Minute
	maxGracefulTimeout     = 24 * time.Hour
	maxServerFirstWait     = 10 * time.Minute
	maxIdleTimeout         = 30 * 24 * time.Hour
	maxTCPKeepAlive        = 32767 * time.Second
	maxIdentifyReadTimeout = maxIdentifyTimeout
)

// setting is one bounded option: its Go name, its YAML key under server:,
// its value and inclusive range.
type setting struct {
	name, key string
	v, lo, hi int64
	duration  bool
}

func (s setting) check() error {
	if s.v >= s.lo && s.v <= s.hi {
		return nil
	}
	if s.duration {
		return fmt.Errorf("%v is outside [%v, %v]", time.Duration(s.v), time.Duration(s.lo), time.Duration(s.hi))
	}
	return fmt.Errorf("%d is outside [%d, %d]", s.v, s.lo, s.hi)
}

// bounded lists the bounded options; identify_min_bytes depends on
// buffer_size and is checked against it.
func (o *options) bounded() []setting {
	d := func(name, key string, v, lo, hi time.Duration) setting {
		return setting{name, key, int64(v), int64(lo), int64(hi), true}
	}
	return []setting{
		{"MaxConnections", "max_connections", int64(o.maxConnections), 1, maxMaxConnections, false},
		{"BufferSize", "buffer_size", int64(o.bufferSize), minBufferSize, maxBufferSize, false},
		{"IdentifyMinBytes", "identify_min_bytes", int64(o.identifyMinBytes), 1, int64(max(o.bufferSize, 1)), false},
		d("IdentifyTimeout", "identify_timeout", o.identifyTimeout, 1, maxIdentifyTimeout),
		d("IdentifyReadTimeout", "identify_read_timeout", o.readTimeout, 0, maxIdentifyReadTimeout),
		d("CacheTTL", "cache_ttl", o.cacheTTL, 0, maxCacheTTL),
		d("DialTimeout", "dial_timeout", o.dialTimeout, 1, maxDialTimeout),
		d("GracefulShutdownTimeout", "graceful_shutdown_timeout", o.gracefulTimeout, 0, maxGracefulTimeout),
		d("ServerFirstWait", "server_first_wait", o.serverFirstWait, 0, maxServerFirstWait),
		d("IdleTimeout", "idle_timeout", o.idleTimeout, 0, maxIdleTimeout),
		d("TCPKeepAlive", "tcp_keepalive", o.tcpKeepAlive, 0, maxTCPKeepAlive),
	}
}

// validate reports every invalid option at once.
func (o *options) validate() error {
	var errs []error
	for _, s := range o.bounded() {
		if err := s.check(); err != nil {
			errs = append(errs, fmt.Errorf("%s must be in range: %w", s.name, err))
		}
	}
	if o.settleWait < 0 || o.settleWait > maxIdentifyTimeout {
		errs = append(errs, fmt.Errorf("settle wait must be in range: %v is outside [0, %v]", o.settleWait, maxIdentifyTimeout))
	}
	return errors.Join(errs...)
}

// WithMaxConnections caps concurrent connections (default 1024, 1 to 10,000,000). Connections
// over the cap are accepted and closed at once, counted as refused: queueing
// them would hold file descriptors for clients that may give up anyway.
func WithMaxConnections(n int) Option { return func(o *options) { o.maxConnections = n } }

// WithBufferSize sets the identification buffer size (default 32 KiB, 512 B
// to 1 MiB). Each connection in identification holds one whole buffer, so
// MaxConnections × BufferSize bounds that memory.
func WithBufferSize(n int) Option { return func(o *options) { o.bufferSize = n } }

// WithIdentifyTimeout bounds the identification phase (default 15s, at most 10m).
func WithIdentifyTimeout(d time.Duration) Option { return func(o *options) { o.identifyTimeout = d } }

// WithIdentifyMinBytes bounds user byte-pattern protocols (MatchRegexes,
// MatchBytes windows, CustomValidator: they may never decide): once this many
// bytes are read while only they are undecided, decide with what is there
// (default 1024; must be > 0 and <= BufferSize). Built-in detectors and route
// conditions are not cut short by it: they decide when their handshake or
// header block is complete, within the buffer and the identify timeout.
func WithIdentifyMinBytes(n int) Option { return func(o *options) { o.identifyMinBytes = n } }

// WithCacheTTL sets the identification cache entry lifetime (default 5m, 0 off,
// at most 24h).
func WithCacheTTL(d time.Duration) Option { return func(o *options) { o.cacheTTL = d } }

// WithDialTimeout bounds dialing a backend, retries included (default 5s, at most 5m).
func WithDialTimeout(d time.Duration) Option { return func(o *options) { o.dialTimeout = d } }

// WithGracefulShutdownTimeout bounds the drain on shutdown (default 60s, at most 24h).
func WithGracefulShutdownTimeout(d time.Duration) Option {
	return func(o *options) { o.gracefulTimeout = d }
}

// WithServerFirstWait: a client silent this long goes to the server-first
// protocol (FTP, SMTP), like sslh's on_timeout (default 1s, at most 10m).
func WithServerFirstWait(d time.Duration) Option { return func(o *options) { o.serverFirstWait = d } }

// WithIdleTimeout closes forwarded connections idle this long (default 0: never,
// at most 30 days).
func WithIdleTimeout(d time.Duration) Option { return func(o *options) { o.idleTimeout = d } }

// WithIdentifyReadTimeout bounds the wait for each next read during
// identification (default 0: only IdentifyTimeout applies; at most 10m). A client that
// trickles a byte now and then is cut at this gap, not at the overall deadline.
func WithIdentifyReadTimeout(d time.Duration) Option { return func(o *options) { o.readTimeout = d } }

// WithTCPKeepAlive turns on TCP keepalive probes on client connections,
// first after d of silence, then every d (default 0: off, as in HAProxy
// without clitcpka and sslh: it costs four setsockopt calls per connection).
// It detects clients that vanished without a FIN when no idle timeout is
// set. At most 32767s, the kernel's limit. Applies to listeners opened by
// RunServer and Listen.
func WithTCPKeepAlive(d time.Duration) Option { return func(o *options) { o.tcpKeepAlive = d } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }
