package protocols

import (
	"bytes"
	"strings"
	"testing"

	"github.com/darkit/protoplex/internal/testnet"
)

// TestRedisInlineBound: an inline command line longer than Redis's own
// limit is rejected, one that fits is not.
func TestRedisInlineBound(t *testing.T) {
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
	b.Run("resp", func(b *testing.B) { benchDetect(b, detectRedis, testnet.Flight(b, "redis-cli.bin"), Match) })
	b.Run("inline", func(b *testing.B) { benchDetect(b, detectRedis, testnet.Flight(b, "redis-inline.bin"), Match) })
	b.Run("reject-http", func(b *testing.B) { benchDetect(b, detectRedis, testnet.Flight(b, "http-curl.bin"), NoMatch) })
}
