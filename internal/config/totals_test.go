package config

import (
	"fmt"
	"strings"
	"testing"
)

// totalsYAML builds a config of user protocols P0..Pn-1, each with its own
// start bytes, targets closed ports on 127.0.0.2 and extra lines (indented
// as the protocol's keys).
func totalsYAML(head string, protos int, targets int, extra ...string) string {
	var b strings.Builder
	b.WriteString("server:\n  listen: \"127.0.0.1:0\"\n" + head + "protocols:\n")
	port := 1
	for i := range protos {
		ts := make([]string, targets)
		for j := range ts {
			ts[j] = fmt.Sprintf("127.0.0.2:%d", port)
			port++
		}
		fmt.Fprintf(&b, "  - name: P%d\n    match_start_bytes: [\"ff%04x\"]\n    target: %q\n", i, i, strings.Join(ts, ","))
		for _, e := range extra {
			b.WriteString("    " + e + "\n")
		}
	}
	return b.String()
}

// keyLine is the file:line prefix of key in protocol P<proto> of y.
func keyLine(y string, proto int, key string) string {
	at := strings.Index(y, fmt.Sprintf("name: P%d\n", proto))
	at += strings.Index(y[at:], key+":")
	return fmt.Sprintf("t.yaml:%d: ", strings.Count(y[:at], "\n")+1)
}

// repeats is a regex of n counted repetitions of 1000 characters.
func repeats(n int) string { return strings.Repeat(`(?:[^\n]{1000})`, n) }

// TestConfigTotalsBounded: configs whose every value is in range but whose
// totals would exhaust fds (warm pools, health probes, targets) or memory
// (regex programs) are refused with file:line; a config just under each
// bound is accepted.
func TestConfigTotalsBounded(t *testing.T) {
	regexList := func(n, each int) string {
		rs := make([]string, n)
		for i := range rs {
			rs[i] = fmt.Sprintf("%q", repeats(each))
		}
		return "match_regexes: [" + strings.Join(rs, ", ") + "]"
	}
	for _, c := range []struct {
		name        string
		over, under string
		proto       int    // the protocol the error names
		key, want   string // its key (for the line) and the message
	}{
		{
			name:  "targets in all protocols",
			over:  totalsYAML("", 5, 1000),
			under: totalsYAML("", 4, 1024),
			proto: 4, key: "target", want: "5000 targets in protocols[0..4], at most 4096 in all protocols",
		},
		{
			name:  "warm pool connections",
			over:  totalsYAML("", 2, 2, "pool: {min_idle: 300}"),
			under: totalsYAML("", 4, 1, "pool: {min_idle: 256}"),
			proto: 1, key: "pool", want: "keep 1200 warm connections (targets × min_idle), at most 1024 in all",
		},
		{
			name:  "warm pool connections over max_connections",
			over:  totalsYAML("  max_connections: 100\n", 1, 1, "pool: {min_idle: 101}"),
			under: totalsYAML("  max_connections: 100\n", 1, 1, "pool: {min_idle: 100}"),
			proto: 0, key: "pool", want: "keep 101 warm connections (targets × min_idle), at most 100 in all",
		},
		{
			name:  "health probes per second",
			over:  totalsYAML("", 2, 60, "health_check: {interval: \"100ms\", check: tcp}"),
			under: totalsYAML("", 1, 100, "health_check: {interval: \"100ms\", check: tcp}"),
			proto: 1, key: "health_check", want: "probe 1200 targets per second (targets / interval), at most 1000 in all",
		},
		{
			name:  "one regex program",
			over:  totalsYAML("", 1, 1, regexList(1, 2)),
			under: totalsYAML("", 1, 1, "match_regexes: [\"(?:[^\\n]{1000})(?:[^\\n]{990})\"]"),
			proto: 0, key: "match_regexes", want: "match_regexes[0]: compiles to 2002 instructions, at most 2000: simplify the pattern (counted repetitions like {1000} expand)",
		},
		{
			name:  "one regex program far over",
			over:  totalsYAML("", 1, 1, regexList(1, 45)),
			under: totalsYAML("", 1, 1, regexList(1, 1)),
			proto: 0, key: "match_regexes", want: "match_regexes[0]: compiles to about 45000 instructions, at most 2000",
		},
		{
			name:  "regex programs in all",
			over:  totalsYAML("", 2, 1, regexList(10, 1)),
			under: totalsYAML("", 1, 1, regexList(19, 1)),
			proto: 1, key: "match_regexes", want: "match_regexes[9]: the regexes of protocols[0..1] compile to 20040 instructions, at most 20000 in all",
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.over), "t.yaml")
			if err == nil {
				t.Fatal("accepted over the bound")
			}
			if line := keyLine(c.over, c.proto, c.key); !strings.Contains(err.Error(), line+fmt.Sprintf("protocols[%d] (P%d): ", c.proto, c.proto)) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want %s...%s, got:\n%v", line, c.want, err)
			}
			if _, err := Parse([]byte(c.under), "t.yaml"); err != nil {
				t.Fatalf("just under the bound refused: %v", err)
			}
		})
	}
}

// TestClusterHealthIntervalCounts: the cluster's default health-check
// interval counts in the probe total for protocols that set none.
func TestClusterHealthIntervalCounts(t *testing.T) {
	cluster := totalsYAML("", 1, 1001, "")
	cluster += "distributed:\n  enable: true\n  load_balancer:\n    health_check_interval: 1\n"
	if _, err := Parse([]byte(cluster), "t.yaml"); err == nil || !strings.Contains(err.Error(), "probe 1001 targets per second") {
		t.Fatalf("cluster default interval: %v", err)
	}
}
