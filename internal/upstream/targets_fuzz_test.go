package upstream

import (
	"net"
	"strings"
	"testing"
)

// FuzzParseTargets: any spec parses or is refused without panicking, and
// every target accepted is a "unix:" path CheckUnixPath accepts or a
// host:port, with a weight in 1..1000.
func FuzzParseTargets(f *testing.F) {
	for _, s := range []string{"a:1,b:2;w=3", "unix:/run/app.sock;w=2, 127.0.0.1:80", "unix:rel", "[::1]:443", "unix:/a,unix:/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		ts, err := ParseTargets([]string{spec})
		if err != nil {
			return
		}
		for _, tg := range ts {
			if tg.Weight < 1 || tg.Weight > 1000 {
				t.Fatalf("%q: weight %d", spec, tg.Weight)
			}
			if path, ok := strings.CutPrefix(tg.Addr, UnixPrefix); ok {
				if err := CheckUnixPath(path); err != nil {
					t.Fatalf("%q: accepted %q: %v", spec, tg.Addr, err)
				}
				continue
			}
			if _, _, err := net.SplitHostPort(tg.Addr); err != nil {
				t.Fatalf("%q: accepted %q: %v", spec, tg.Addr, err)
			}
		}
	})
}
