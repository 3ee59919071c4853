package config

import "time"

// Defaults of the server: settings, for the file and the Go options alike.
const (
	DefaultMaxConnections          = 1024
	DefaultBufferSize              = 32 * 1024
	DefaultIdentifyTimeout         = 15 * time.Second
	DefaultIdentifyMinBytes        = 1024
	DefaultCacheTTL                = 5 * time.Minute
	DefaultDialTimeout             = 5 * time.Second
	DefaultGracefulShutdownTimeout = 60 * time.Second
	DefaultServerFirstWait         = time.Second
	DefaultListen                  = ":9090"
	DefaultMonitoringBind          = "127.0.0.1"
	DefaultWatchPrefix             = "/protoplex/config"
)

// The values of server.data_plane.
const (
	// DataPlaneEvents serves TCP connections from per-core epoll loops on
	// Linux; on other systems it means DataPlaneGoroutines.
	DataPlaneEvents = "events"
	// DataPlaneGoroutines serves each TCP connection from goroutines of
	// its own.
	DataPlaneGoroutines = "goroutines"
)

// DefaultServer is the server: block with every default set: what a manager
// built with no options runs with.
func DefaultServer() Server {
	return Server{
		MaxConnections:          DefaultMaxConnections,
		BufferSize:              DefaultBufferSize,
		IdentifyTimeout:         DefaultIdentifyTimeout,
		IdentifyMinBytes:        DefaultIdentifyMinBytes,
		CacheTTL:                DefaultCacheTTL,
		DialTimeout:             DefaultDialTimeout,
		GracefulShutdownTimeout: DefaultGracefulShutdownTimeout,
		ServerFirstWait:         DefaultServerFirstWait,
		DataPlane:               DataPlaneEvents,
	}
}

// applyDefaults fills the keys a file left out. A zero duration in a file
// means "not set" for the keys with a default; idle_timeout, tcp_keepalive
// and identify_read_timeout have none (0 is off).
func (c *Config) applyDefaults() {
	s := &c.Server
	d := DefaultServer()
	if len(s.Listen) == 0 {
		s.Listen = StringList{DefaultListen}
	}
	if s.DataPlane == "" {
		s.DataPlane = d.DataPlane
	}
	if c.Monitoring.BindAddress == "" {
		c.Monitoring.BindAddress = DefaultMonitoringBind
	}
	setInt := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	setDur := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	setInt(&s.MaxConnections, d.MaxConnections)
	setInt(&s.BufferSize, d.BufferSize)
	setInt(&s.IdentifyMinBytes, min(d.IdentifyMinBytes, s.BufferSize))
	setDur(&s.IdentifyTimeout, d.IdentifyTimeout)
	setDur(&s.CacheTTL, d.CacheTTL)
	setDur(&s.DialTimeout, d.DialTimeout)
	setDur(&s.GracefulShutdownTimeout, d.GracefulShutdownTimeout)
	setDur(&s.ServerFirstWait, d.ServerFirstWait)
}
