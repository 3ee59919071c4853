package config

import (
	"time"

	"github.com/darkit/protoplex/internal/identify"
	"github.com/darkit/protoplex/internal/upstream"
)

// MaxFileSize bounds a configuration file (4 MiB): a larger one (a wrong
// path, a log file) is refused before it is read whole.
const MaxFileSize = 4 << 20

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
	maxEventLoops          = 64 // more loops than cores only add wake-ups and memory
)

// Bounds of every value, listed in docs/config.md. Each keeps a config value from costing memory,
// goroutines or CPU without limit; the guard checks its own as well.
const (
	maxListen          = 64
	maxTrustedProxies  = 1024
	maxProtocols       = 1024
	maxTargets         = upstream.MaxTargets // per protocol
	maxConditions      = 10_000              // per list written in the file; sni_file and host_file hold more
	maxTotalNames      = identify.MaxNames   // sni, alpn and host names of all protocols, files included
	maxConditionLen    = 253                 // a DNS name
	maxNameLen         = 64
	maxPriority        = 1_000_000
	maxMatchPatterns   = 64
	maxMatchStartBytes = 1024
	maxRegexLen        = 4096
	maxRegexInsts      = 2_000  // compiled instructions of one regex
	maxTotalRegexInsts = 20_000 // of all match_regexes together
	maxTotalTargets    = 4096   // all protocols together
	maxPoolConns       = 1024   // Σ targets × pool.min_idle, and at most max_connections
	maxProbeRate       = 1000   // Σ targets / health_check.interval, probes per second
	maxPoolMinIdle     = 1000   // per target
	maxPoolIdleTime    = 24 * time.Hour
	minHealthInterval  = 100 * time.Millisecond
	maxHealthInterval  = 24 * time.Hour
	maxHealthTimeout   = time.Minute
	maxRiseFall        = 100
	maxHealthPathLen   = 1024
	maxEtcdEndpoints   = 64
	maxStringLen       = 1024
	maxIntervalSeconds = 86400
	minLeaseTTL        = time.Second
	maxLeaseTTL        = time.Hour
	// A start that waits longer for etcd is an outage, not a slow start.
	minStartTimeout = time.Second
	maxStartTimeout = 10 * time.Minute
	maxStaleness    = 24 * time.Hour
)
