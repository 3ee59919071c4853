package protocols

const (
	// redisMaxArgs bounds N in the first "*N": a first command with more
	// arguments than this is not recognised (it keeps "*" + digits from
	// matching arbitrary data).
	redisMaxArgs = 1024
	// redisMaxBulk bounds the length of the first bulk string, the command
	// name (the longest Redis command names have about 20 letters).
	redisMaxBulk = 1024
	// redisMaxInline is Redis's own limit for an inline command line
	// (PROTO_INLINE_MAX_SIZE).
	redisMaxInline = 64 << 10
	// redisMaxInlineCmd is the longest name in redisInlineCommands.
	redisMaxInlineCmd = 10
)

// redisInlineCommands are the commands recognised in the inline form
// ("PING\r\n", as typed in telnet or sent by health checkers), in upper case.
// Only common commands are listed: each one widens what plain text can be
// mistaken for Redis. Read-only.
var redisInlineCommands = []string{
	"PING", "AUTH", "HELLO", "INFO", "SELECT", "QUIT", "ECHO", "SET", "GET",
	"CLIENT", "COMMAND", "DEL", "EXISTS", "KEYS", "DBSIZE", "MONITOR",
	"SUBSCRIBE", "PSUBSCRIBE", "PUBLISH", "FLUSHALL", "FLUSHDB", "SCAN",
	"TYPE", "TTL", "INCR", "DECR", "EXPIRE", "CONFIG", "MGET", "MSET",
	"MULTI", "ROLE", "LPUSH", "RPUSH", "LRANGE", "HGET", "HSET", "HGETALL",
	"CLUSTER", "SCRIPT",
}

func init() { register(redisDescriptor, NewRedisProtocol) }

var redisDescriptor = Descriptor{Spec: Spec{Name: "Redis", Transports: TCP, Detect: detectRedis, FirstBytes: redisFirstBytes()},
	Summary: "RESP array header or an inline command line"}

// NewRedisProtocol returns Redis: a RESP array "*N\r\n$len\r\n" (what every
// client library sends) or an inline command line.
func NewRedisProtocol(target string) *Protocol { return build(&redisDescriptor, target) }

// redisFirstBytes is '*' and the first letter of each inline command, in
// upper and lower case.
func redisFirstBytes() []byte {
	first := []byte{'*'}
	var seen [256]bool
	for _, c := range redisInlineCommands {
		if b := c[0]; !seen[b] {
			seen[b] = true
			first = append(first, b, b+'a'-'A')
		}
	}
	return first
}

func detectRedis(data []byte) Result {
	if len(data) == 0 {
		return NeedMore
	}
	if data[0] == '*' {
		return redisDetectRESP(data)
	}
	return redisDetectInline(data)
}

// redisDetectRESP matches "*N\r\n$M\r\n" with 1 <= N <= redisMaxArgs and
// 1 <= M <= redisMaxBulk, numbers without leading zeros (Redis rejects them).
func redisDetectRESP(data []byte) Result {
	pos, r := redisReadInt(data, 1, redisMaxArgs)
	if r != Match {
		return r
	}
	if pos == len(data) {
		return NeedMore
	}
	if data[pos] != '$' {
		return NoMatch
	}
	_, r = redisReadInt(data, pos+1, redisMaxBulk)
	return r
}

// redisReadInt reads a positive decimal at data[pos:] terminated by CRLF.
func redisReadInt(data []byte, pos, max int) (next int, r Result) {
	start, v := pos, 0
	for ; pos < len(data) && data[pos] != '\r'; pos++ {
		c := data[pos]
		if c < '0' || c > '9' || (pos == start && c == '0') {
			return 0, NoMatch
		}
		if v = v*10 + int(c-'0'); v > max {
			return 0, NoMatch
		}
	}
	if pos == len(data) {
		return 0, NeedMore
	}
	if pos == start {
		return 0, NoMatch
	}
	if pos++; pos == len(data) {
		return 0, NeedMore
	}
	if data[pos] != '\n' {
		return 0, NoMatch
	}
	return pos + 1, Match
}

// redisDetectInline matches a known command (any case) followed by a space,
// a tab or the line end. It decides at the end of the line: a line ending in
// a protocol version such as " HTTP/1.1" or " SIP/2.0" is another text
// protocol's request line ("GET / HTTP/1.1" is HTTP, "INFO sip:x SIP/2.0"
// is SIP), not Redis.
func redisDetectInline(data []byte) Result {
	i := 0
	for ; i < len(data); i++ {
		c := data[i]
		if c == ' ' || c == '\t' || c == '\r' || c == '\n' {
			break
		}
		if i >= redisMaxInlineCmd || !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return NoMatch
		}
	}
	if !redisAnyHasPrefixFold(data[:i]) {
		return NoMatch
	}
	if i == len(data) {
		return NeedMore
	}
	if !redisIsInlineCommand(data[:i]) {
		return NoMatch // includes an empty command
	}
	limit := len(data)
	if limit > redisMaxInline {
		limit = redisMaxInline
	}
	for j := i; j < limit; j++ {
		switch c := data[j]; {
		case c == '\n':
			line := data[:j]
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			}
			if redisEndsWithVersion(line) {
				return NoMatch
			}
			return Match
		case c == '\r':
			// Only as part of the CRLF line end.
			if j+1 < len(data) && data[j+1] != '\n' {
				return NoMatch
			}
		case c < 0x20 && c != '\t', c == 0x7f:
			return NoMatch
		}
	}
	if limit == redisMaxInline {
		return NoMatch
	}
	return NeedMore
}

// redisEndsWithVersion reports whether the last space-separated word of line
// looks like "HTTP/1.1": upper-case letters, '/', digit, '.', digit.
func redisEndsWithVersion(line []byte) bool {
	n := len(line)
	if n < 5 || line[n-2] != '.' || !redisIsDigit(line[n-1]) || !redisIsDigit(line[n-3]) || line[n-4] != '/' {
		return false
	}
	k := n - 5
	for k >= 0 && line[k] >= 'A' && line[k] <= 'Z' {
		k--
	}
	return k < n-5 && k >= 0 && line[k] == ' '
}

func redisIsDigit(c byte) bool { return c >= '0' && c <= '9' }

func redisAnyHasPrefixFold(prefix []byte) bool {
	for _, s := range redisInlineCommands {
		if len(prefix) <= len(s) && equalFoldASCII(prefix, s[:len(prefix)]) {
			return true
		}
	}
	return false
}

func redisIsInlineCommand(b []byte) bool {
	for _, s := range redisInlineCommands {
		if equalFoldASCII(b, s) {
			return true
		}
	}
	return false
}
