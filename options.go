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
	DefaultSettleWait              = 300 * time.Millisecond
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

// validate reports every invalid option at once.
func (o *options) validate() error {
	var errs []error
	if o.maxConnections <= 0 {
		errs = append(errs, fmt.Errorf("MaxConnections must be > 0, got %d", o.maxConnections))
	}
	if o.bufferSize <= 0 {
		errs = append(errs, fmt.Errorf("BufferSize must be > 0, got %d", o.bufferSize))
	}
	if o.identifyMinBytes <= 0 || o.identifyMinBytes > o.bufferSize {
		errs = append(errs, fmt.Errorf("IdentifyMinBytes must be > 0 and <= BufferSize (%d), got %d", o.bufferSize, o.identifyMinBytes))
	}
	if o.identifyTimeout <= 0 {
		errs = append(errs, fmt.Errorf("IdentifyTimeout must be > 0, got %v", o.identifyTimeout))
	}
	if o.dialTimeout <= 0 {
		errs = append(errs, fmt.Errorf("DialTimeout must be > 0, got %v", o.dialTimeout))
	}
	if o.cacheTTL < 0 || o.gracefulTimeout < 0 || o.serverFirstWait < 0 || o.idleTimeout < 0 || o.readTimeout < 0 || o.tcpKeepAlive < 0 {
		errs = append(errs, errors.New("durations must not be negative"))
	}
	return errors.Join(errs...)
}

// WithMaxConnections caps concurrent connections (default 1024). Connections
// over the cap are accepted and closed at once, counted as refused: queueing
// them would hold file descriptors for clients that may give up anyway.
func WithMaxConnections(n int) Option { return func(o *options) { o.maxConnections = n } }

// WithBufferSize sets the identification buffer size (default 32 KiB).
func WithBufferSize(n int) Option { return func(o *options) { o.bufferSize = n } }

// WithIdentifyTimeout bounds the identification phase (default 15s).
func WithIdentifyTimeout(d time.Duration) Option { return func(o *options) { o.identifyTimeout = d } }

// WithIdentifyMinBytes: once this many bytes are read, decide with what is
// there (default 1024; must be > 0 and <= BufferSize). Certain matches are
// decided earlier; RTMP needs at least 1537.
func WithIdentifyMinBytes(n int) Option { return func(o *options) { o.identifyMinBytes = n } }

// WithCacheTTL sets the identification cache entry lifetime (default 5m, 0 off).
func WithCacheTTL(d time.Duration) Option { return func(o *options) { o.cacheTTL = d } }

// WithDialTimeout bounds dialing a backend, retries included (default 5s).
func WithDialTimeout(d time.Duration) Option { return func(o *options) { o.dialTimeout = d } }

// WithGracefulShutdownTimeout bounds the drain on shutdown (default 60s).
func WithGracefulShutdownTimeout(d time.Duration) Option {
	return func(o *options) { o.gracefulTimeout = d }
}

// WithServerFirstWait: a client silent this long goes to the server-first
// protocol (FTP, SMTP), like sslh's on_timeout (default 1s).
func WithServerFirstWait(d time.Duration) Option { return func(o *options) { o.serverFirstWait = d } }

// WithIdleTimeout closes forwarded connections idle this long (default 0: never).
func WithIdleTimeout(d time.Duration) Option { return func(o *options) { o.idleTimeout = d } }

// WithIdentifyReadTimeout bounds the wait for each next read during
// identification (default 0: only IdentifyTimeout applies). A client that
// trickles a byte now and then is cut at this gap, not at the overall deadline.
func WithIdentifyReadTimeout(d time.Duration) Option { return func(o *options) { o.readTimeout = d } }

// WithTCPKeepAlive turns on TCP keepalive probes on client connections,
// first after d of silence, then every d (default 0: off, as in HAProxy
// without clitcpka and sslh: it costs four setsockopt calls per connection).
// It detects clients that vanished without a FIN when no idle timeout is
// set. Applies to listeners opened by RunServer and Listen.
func WithTCPKeepAlive(d time.Duration) Option { return func(o *options) { o.tcpKeepAlive = d } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }
