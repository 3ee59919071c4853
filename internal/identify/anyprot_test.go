package identify

import (
	"bytes"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/protocols"
)

// anyProtFirst is the routed catalogue with sslh's catch-all registered
// before every other route, the way an sslh configuration converted line by
// line may list it.
func anyProtFirst(t testing.TB) []*protocols.Protocol {
	t.Helper()
	any := protocols.NewAnyProtProtocol("127.0.0.1:9")
	any.Fallback = true
	return append([]*protocols.Protocol{any}, routedCatalogue(t)...)
}

// TestAnyProtNeverTakesASplitFlight: with anyprot registered first, every
// recorded flight, split at every offset into two reads, goes where the
// whole flight goes, and no flight a detector recognises goes to anyprot.
func TestAnyProtNeverTakesASplitFlight(t *testing.T) {
	tb := mustTable(t, anyProtFirst(t)...)
	for name, data := range splitFlights(t) {
		whole := identifyScript(tb, data)
		own := strings.SplitN(name, "-", 2)[0]
		if _, builtin := protocols.Describe(own); builtin && (whole.Route == nil || whole.Route.Name == protocols.AnyProt) {
			t.Fatalf("%s: whole flight %s, want its own protocol", name, resultKey(whole))
		}
		for i := 1; i < len(data); i++ {
			got := identifyScript(tb, bytes.Clone(data[:i]), bytes.Clone(data[i:]))
			if resultKey(got) != resultKey(whole) {
				t.Fatalf("%s split at %d: %s after %d bytes, whole flight: %s", name, i, resultKey(got), got.N, resultKey(whole))
			}
		}
	}
}

// TestAnyProtWaitsForASlowFlight: the first segments of a flight, then a
// pause longer than the settle wait, then the rest, over a real pipe: the
// flight's own route wins, not the catch-all. A client that stops after
// its first segment reaches anyprot at the identification deadline.
func TestAnyProtWaitsForASlowFlight(t *testing.T) {
	tb := mustTable(t, anyProtFirst(t)...)
	fl := splitFlights(t)
	l := lim // SettleWait 50 ms
	for _, c := range []struct {
		flight string
		at     int
		want   string
	}{
		{"tls-chromium.bin", 3, "TLS[sni=a.example]/ok"},
		{"ssh-openssh.bin", 3, "SSH/ok"},
		{"http-long-headers", 2, "HTTP[host=host.example]/ok"},
		{"rtmp-ffmpeg.bin", 1000, "RTMP/ok"},
		{"postgresql-psql.bin", 4, "PostgreSQL/ok"},
	} {
		data := fl[c.flight]
		res := identifyPaused(t, tb, l, data[:c.at], data[c.at:], 4*l.SettleWait)
		if resultKey(res) != c.want {
			t.Errorf("%s split at %d with a pause: %s after %d bytes, want %s", c.flight, c.at, resultKey(res), res.N, c.want)
		}
	}
	l.Timeout = 4 * l.SettleWait
	res := identifyPaused(t, tb, l, fl["ssh-openssh.bin"][:3], nil, 0)
	if resultKey(res) != "anyprot/timeout" || !res.Fallback {
		t.Fatalf("a client stopping after 3 bytes of SSH: %s (fallback %v), want anyprot at the deadline", resultKey(res), res.Fallback)
	}
}

// identifyPaused identifies a client that writes first, waits pause and
// writes rest (nothing when rest is nil), over net.Pipe.
func identifyPaused(t *testing.T, tb *Table, l Limits, first, rest []byte, pause time.Duration) Result {
	t.Helper()
	srv, cli := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := cli.Write(first); err != nil || rest == nil {
			return
		}
		time.Sleep(pause) // the stimulus: a gap between two segments
		cli.Write(rest)
	}()
	res := tb.Identify(srv, make([]byte, MinBuffer), 0, l)
	srv.Close()
	cli.Close()
	<-done
	return res
}

// TestRegexCatchAllIsRankedByOrder is the contrast that made anyprot a
// built-in: the older catch-all, a user protocol matching the empty regex,
// is a candidate ranked by file order, so listed first it takes every SSH
// client, whole or split; anyprot listed first takes none.
func TestRegexCatchAllIsRankedByOrder(t *testing.T) {
	regex := &protocols.Protocol{Name: "catchall", Target: "127.0.0.1:9", MatchRegexes: []*regexp.Regexp{regexp.MustCompile("")}}
	ssh := splitFlights(t)["ssh-openssh.bin"]
	for _, c := range []struct {
		first *protocols.Protocol
		want  string
	}{{regex, "catchall/ok"}, {anyProtFirst(t)[0], "SSH/ok"}} {
		tb := mustTable(t, append([]*protocols.Protocol{c.first}, routedCatalogue(t)...)...)
		for _, chunks := range [][][]byte{{ssh}, {ssh[:3], ssh[3:]}} {
			if got := identifyScript(tb, chunks...); resultKey(got) != c.want {
				t.Errorf("%s first, SSH in %d reads: %s, want %s", c.first.Name, len(chunks), resultKey(got), c.want)
			}
		}
	}
}
