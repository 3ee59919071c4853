package protocols

import (
	"bytes"
	"strings"
	"testing"
)

func TestRedisDetect(t *testing.T) {
	runDetectCases(t, detectRedis, []detectCase{
		{"resp ping", "*1\r\n$4\r\nPING\r\n", Match},
		{"resp header only", "*1\r\n$4\r\n", Match},
		{"resp hello", "*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n", Match},
		{"resp 1024", "*1024\r\n$3\r\nDEL\r\n", Match},
		{"resp prefix", "*3\r\n$3", NeedMore},
		{"resp cr", "*3\r", NeedMore},
		{"star", "*", NeedMore},
		{"resp zero args", "*0\r\n", NoMatch},
		{"resp leading zero", "*01\r\n$4\r\n", NoMatch},
		{"resp too many", "*1025\r\n", NoMatch},
		{"resp no bulk", "*1\r\n:1\r\n", NoMatch},
		{"resp bulk zero", "*1\r\n$0\r\n", NoMatch},
		{"resp bulk negative", "*1\r\n$-1\r\n", NoMatch},
		{"resp bulk too long", "*1\r\n$1025\r\n", NoMatch},
		{"resp lf only", "*1\n", NoMatch},
		{"resp cr junk", "*1\rx", NoMatch},
		{"resp no digits", "*\r\n", NoMatch},
		{"inline ping", "PING\r\n", Match},
		{"inline ping lf", "ping\n", Match},
		{"inline auth", "AUTH secret\r\n", Match},
		{"inline mixed case", "sElEcT 2\r\n", Match},
		{"inline get key", "GET key\r\n", Match},
		{"inline set", "SET k \"v w\"\r\n", Match},
		{"inline tab", "INFO\tserver\r\n", Match},
		{"inline partial", "PIN", NeedMore},
		{"inline line open", "PING", NeedMore},
		{"inline args open", "SET key val", NeedMore},
		{"inline cr", "PING\r", NeedMore},
		{"unknown command", "PONG\r\n", NoMatch},
		{"command prefix only", "PINGX\r\n", NoMatch},
		{"underscore", "GET_PARAMETER rtsp://x RTSP/1.0\r\n", NoMatch},
		{"http get", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", NoMatch},
		{"http get lower", "get /index.html HTTP/1.0\r\n", NoMatch},
		{"sip info", "INFO sip:bob@example.com SIP/2.0\r\n", NoMatch},
		{"sip subscribe", "SUBSCRIBE sip:a@b SIP/2.0\r\n", NoMatch},
		{"rtsp setup", "SETUP rtsp://x/t RTSP/1.0\r\n", NoMatch},
		{"ssh", "SSH-2.0-OpenSSH\r\n", NoMatch},
		{"control byte", "PING \x01\r\n", NoMatch},
		{"bare cr", "PING\rX\n", NoMatch},
		{"tls", "\x16\x03\x01", NoMatch},
	})
	long := "ECHO " + strings.Repeat("a", redisMaxInline)
	if got := detectRedis([]byte(long)); got != NoMatch {
		t.Fatalf("inline line over the limit: %v", got)
	}
	// Around the bound (a full checkMonotonic would be quadratic in 64 KiB).
	for n := redisMaxInline - 3; n <= redisMaxInline+1; n++ {
		want := NeedMore
		if n >= redisMaxInline {
			want = NoMatch
		}
		if got := detectRedis([]byte(long[:n])); got != want {
			t.Fatalf("inline line of %d bytes: %v, want %v", n, got, want)
		}
	}
	fits := long[:redisMaxInline-2] + "\r\n"
	if got := detectRedis([]byte(fits + "more")); got != Match {
		t.Fatalf("inline line of exactly %d bytes: %v", len(fits), got)
	}
}

func TestRedisEndsWithVersion(t *testing.T) {
	for line, want := range map[string]bool{
		"GET / HTTP/1.1":  true,
		"INFO x SIP/2.0":  true,
		"SET k HTTP/1.1":  true,
		"SET k v":         false,
		"GET /1.1":        false,
		"GET x/1.1":       false,
		"HTTP/1.1":        false,
		"GET k http/1.1":  false,
		"GET k HTTP/1.10": false,
		"":                false,
	} {
		if got := redisEndsWithVersion([]byte(line)); got != want {
			t.Errorf("redisEndsWithVersion(%q) = %v, want %v", line, got, want)
		}
	}
}

func TestRedisProtocol(t *testing.T) {
	p := NewRedisProtocol("x:6379")
	if p.Name != "Redis" || p.Target != "x:6379" {
		t.Fatalf("unexpected protocol %+v", p)
	}
	for _, c := range redisInlineCommands {
		if len(c) > redisMaxInlineCmd {
			t.Errorf("%s longer than redisMaxInlineCmd", c)
		}
		for _, b := range []byte{c[0], c[0] + 'a' - 'A', '*'} {
			if bytes.IndexByte(p.FirstBytes, b) < 0 {
				t.Errorf("FirstBytes %q lacks %q", p.FirstBytes, b)
			}
		}
		checkDetector(t, c, p.Detect, []byte(c+"\r\n"), Match)
		checkDetector(t, c, p.Detect, []byte(strings.ToLower(c)+" x\n"), Match)
	}
}

func FuzzRedis(f *testing.F) {
	fuzzCore(f, detectRedis, nil, fuzzSeeds(f, []string{"redis-"},
		"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n", "sElEcT 2\r\n", "GET / HTTP/1.1\r\n", "SET k \"v\"\n")...)
}

func BenchmarkDetectRedis(b *testing.B) {
	b.Run("resp", func(b *testing.B) { benchDetect(b, detectRedis, coreFlight(b, "redis-cli.bin"), Match) })
	b.Run("inline", func(b *testing.B) { benchDetect(b, detectRedis, coreFlight(b, "redis-inline.bin"), Match) })
	b.Run("reject-http", func(b *testing.B) { benchDetect(b, detectRedis, coreFlight(b, "http-curl.bin"), NoMatch) })
}
