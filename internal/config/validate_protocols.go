package config

import (
	"cmp"
	"encoding/hex"
	"fmt"
	"regexp/syntax"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/darkit/protoplex/internal/upstream"
	"github.com/darkit/protoplex/protocols"
)

// protocols checks the protocols: entries, one by one and in total (the
// totals bound what all entries together cost: fds, memory, probes).
func (v *checker) protocols(c *Config) {
	if len(c.Protocols) == 0 && !v.undecodable("protocols") {
		where := v.at("protocols")
		if lineOf(v.root, "protocols") == 0 && v.file != "" {
			where = v.file + ":1: "
		}
		v.add(where, ErrNoProtocols)
	}
	if len(c.Protocols) > maxProtocols {
		v.add(v.at("protocols"), "protocols: %d entries, at most %d", len(c.Protocols), maxProtocols)
	}
	fallbacks := 0
	seen := map[string]int{}
	// Totals over all protocols: each bound reported once, at the protocol
	// whose share goes over it.
	var totalTargets, poolConns, regexInsts, totalNames int
	var probeRate float64
	poolLimit := min(maxPoolConns, c.Server.MaxConnections)
	discovery := c.Distributed.Enable && c.Distributed.ServiceDiscovery.Enable
	for i, p := range c.Protocols {
		where := v.at("protocols", fmt.Sprintf("#%d", i))
		if p.Line > 0 && v.root == nil {
			where = fmt.Sprintf("%s:%d: ", v.file, p.Line)
		}
		field := func(key ...string) string {
			return v.at(append([]string{"protocols", fmt.Sprintf("#%d", i)}, key...)...)
		}
		name := fmt.Sprintf("protocols[%d] (%s)", i, p.Name)
		desc, builtin := protocols.Describe(p.Name)
		// Byte patterns make an entry a user protocol whatever its name:
		// it has none of the built-in's detector or route conditions.
		builtin = builtin && len(p.MatchStartBytes)+len(p.MatchRegexes) == 0
		switch {
		case p.Name == "" && !given(v.root, "protocols", fmt.Sprintf("#%d", i), "name"):
			v.add(where, "protocols[%d]: name is required", i)
		case len(p.Name) > maxNameLen || !printable(p.Name):
			v.add(field("name"), "protocols[%d]: name: at most %d printable characters", i, maxNameLen)
		case !builtin && len(p.MatchStartBytes) == 0 && len(p.MatchRegexes) == 0:
			hint := ""
			if s, ok := protocols.Suggest(p.Name); ok {
				hint = fmt.Sprintf(" (did you mean %q?)", s)
			}
			v.add(where, "%s: %q is not a built-in protocol%s; built in: %s; a user protocol needs match_start_bytes or match_regexes", name, p.Name, hint, strings.Join(protocols.Names(), ", "))
		}
		// A protocol may list no target when etcd discovery supplies them
		// (distributed.service_discovery); a target that failed to decode is
		// reported by the decoder, not again here.
		if len(p.Target) == 0 && !discovery {
			if t, found := nodeAt(v.root, "protocols", fmt.Sprintf("#%d", i), "target"); found && t.Kind == yaml.SequenceNode && len(t.Content) == 0 {
				v.add(field("target"), "%s: target: [] (targets from etcd only) needs distributed.enable and distributed.service_discovery.enable: true", name)
			} else if !given(v.root, "protocols", fmt.Sprintf("#%d", i), "target") {
				v.add(where, "%s: target is required", name)
			}
		}
		targets := 0
		for _, t := range p.Target {
			ts, err := upstream.ParseTargets([]string{t})
			if err != nil {
				v.add(field("target"), "%s: %v", name, err)
				continue
			}
			targets += len(ts)
			for _, tg := range ts {
				if err := checkTarget(tg.Addr); err != nil {
					v.add(field("target"), "%s: target %v", name, err)
				}
			}
		}
		if targets > maxTargets {
			v.add(field("target"), "%s: %d targets, at most %d", name, targets, maxTargets)
		}
		if before := totalTargets; before <= maxTotalTargets {
			if totalTargets += targets; totalTargets > maxTotalTargets {
				v.add(field("target"), "%s: %d targets in protocols[0..%d], at most %d in all protocols", name, totalTargets, i, maxTotalTargets)
			}
		}
		v.intIn(field("priority"), name+": priority", p.Priority, -maxPriority, maxPriority)
		conds := protocols.Conditions{SNI: p.SNI, ALPN: p.ALPN, Hosts: p.Host}
		// Names read from sni_file and host_file were checked as they
		// were read, with their file's lines; they count in the total.
		names := len(p.SNI) + len(p.ALPN) + len(p.Host)
		if before := totalNames; before <= maxTotalNames {
			if totalNames += names; totalNames > maxTotalNames {
				v.add(where, "%s: %d sni, alpn and host names in protocols[0..%d], at most %d in all protocols (files included)", name, totalNames, i, maxTotalNames)
			}
		}
		for _, cond := range []struct {
			key  string
			list []string
			max  int
		}{{"sni", inline(p.SNI, p.fileSNI), maxConditionLen}, {"alpn", p.ALPN, 255}, {"host", inline(p.Host, p.fileHost), maxConditionLen}} {
			if len(cond.list) > maxConditions {
				v.add(field(cond.key), "%s: %s: %d entries, at most %d", name, cond.key, len(cond.list), maxConditions)
			}
			bad := 0
			seen := map[string]int{}
			for j, val := range cond.list {
				if val == "" || len(val) > cond.max || !printable(val) {
					v.add(field(cond.key), "%s: %s %q: want 1 to %d printable characters", name, cond.key, val, cond.max)
					break
				}
				err := error(nil)
				if cond.key != "alpn" {
					err = checkName(val)
				}
				// A name twice in one list is a slip (caddy refuses it
				// too); across routes a name is ranked, not refused.
				key := val
				if cond.key != "alpn" {
					key = protocols.NormalizeName(val)
				}
				if first, dup := seen[key]; dup && err == nil {
					err = fmt.Errorf("%q is listed twice (first at %s[%d])", val, cond.key, first)
				}
				if _, dup := seen[key]; !dup {
					seen[key] = j
				}
				if err != nil {
					if bad++; bad > maxReported {
						v.add(field(cond.key), "%s: %s: more entries like these", name, cond.key)
						break
					}
					v.add(field(cond.key, fmt.Sprintf("#%d", j)), "%s: %s %v", name, cond.key, err)
				}
			}
		}
		if p.Fallback && conds.Keys() != 0 {
			v.add(field("fallback"), "%s: fallback: the fallback takes every connection nothing matched, whatever its %s; put fallback: true on an entry without conditions", name, strings.Join(conds.Keys().Names(), "/"))
		}
		if len(p.MatchStartBytes) > maxMatchPatterns {
			v.add(field("match_start_bytes"), "%s: match_start_bytes: %d entries, at most %d", name, len(p.MatchStartBytes), maxMatchPatterns)
		}
		for _, h := range p.MatchStartBytes {
			if b, err := hex.DecodeString(strings.ReplaceAll(h, " ", "")); err != nil || len(b) == 0 {
				v.add(field("match_start_bytes"), "%s: match_start_bytes %q: not hex", name, h)
			} else if len(b) > maxMatchStartBytes {
				v.add(field("match_start_bytes"), "%s: match_start_bytes: %d bytes, at most %d", name, len(b), maxMatchStartBytes)
			}
		}
		if len(p.MatchRegexes) > maxMatchPatterns {
			v.add(field("match_regexes"), "%s: match_regexes: %d entries, at most %d", name, len(p.MatchRegexes), maxMatchPatterns)
		}
		for j, r := range p.MatchRegexes {
			where := field("match_regexes", fmt.Sprintf("#%d", j))
			if len(r) > maxRegexLen {
				v.add(where, "%s: match_regexes[%d]: %d characters, at most %d", name, j, len(r), maxRegexLen)
				continue
			}
			n, exact, err := regexSize(r)
			switch {
			case err != nil:
				v.add(where, "%s: match_regexes %q: %v", name, r, err)
			case n > maxRegexInsts:
				more := ""
				if !exact {
					more = "about "
				}
				v.add(where, "%s: match_regexes[%d]: compiles to %s%d instructions, at most %d: simplify the pattern (counted repetitions like {1000} expand)", name, j, more, n, maxRegexInsts)
			case regexInsts <= maxTotalRegexInsts:
				if regexInsts += n; regexInsts > maxTotalRegexInsts {
					v.add(where, "%s: match_regexes[%d]: the regexes of protocols[0..%d] compile to %d instructions, at most %d in all: simplify the patterns (counted repetitions like {1000} expand)", name, j, i, regexInsts, maxTotalRegexInsts)
				}
			}
		}
		// Route conditions need a detector that extracts them: the
		// registry says which keys each built-in takes.
		if extra := conds.Keys() &^ desc.Routable; builtin && extra != 0 || !builtin && conds.Keys() != 0 {
			if !builtin {
				extra = conds.Keys()
			}
			why := ""
			if _, named := protocols.Describe(p.Name); named && !builtin {
				why = " (the built-in ones: with match_start_bytes or match_regexes this entry is a user protocol)"
			}
			v.add(field(extra.Names()[0]), "%s: %s %s%s", name, strings.Join(extra.Names(), "/"), routableBy(extra), why)
		}
		if !upstream.ValidStrategy(p.Balance) {
			v.add(field("balance"), "%s: balance %q: want %s", name, p.Balance, strategies)
		}
		if p.SendProxy != "" && p.SendProxy != "v1" && p.SendProxy != "v2" {
			v.add(field("send_proxy"), "%s: send_proxy %q: want v1 or v2", name, p.SendProxy)
		}
		v.intIn(field("pool", "min_idle"), name+": pool.min_idle", p.Pool.MinIdle, 0, maxPoolMinIdle)
		if p.Pool.MinIdle > 0 && p.Pool.MinIdle <= maxPoolMinIdle && poolConns <= poolLimit {
			// Each pooled connection holds an fd for as long as the config.
			if poolConns += targets * p.Pool.MinIdle; poolConns > poolLimit {
				v.add(field("pool", "min_idle"), "%s: pool.min_idle: protocols[0..%d] keep %d warm connections (targets × min_idle), at most %d in all (the smaller of %d and max_connections)", name, i, poolConns, poolLimit, maxPoolConns)
			}
		}
		v.durIn(field("pool", "max_idle_time"), name+": pool.max_idle_time", p.Pool.MaxIdleTime, 0, maxPoolIdleTime)
		if p.Pool.MaxIdleTime != 0 && p.Pool.MinIdle == 0 {
			v.add(field("pool", "max_idle_time"), "%s: pool.max_idle_time: has no effect without pool.min_idle (no connection is pooled)", name)
		}
		h := p.HealthCheck
		if h.Interval != 0 {
			v.durIn(field("health_check", "interval"), name+": health_check.interval", h.Interval, minHealthInterval, maxHealthInterval)
		}
		v.durIn(field("health_check", "timeout"), name+": health_check.timeout", h.Timeout, 0, maxHealthTimeout)
		interval := h.Interval
		if interval == 0 && c.Distributed.Enable && c.Distributed.LoadBalancer.HealthCheckInterval > 0 {
			interval = time.Duration(c.Distributed.LoadBalancer.HealthCheckInterval) * time.Second // the cluster's default
		}
		if interval >= minHealthInterval && probeRate <= maxProbeRate {
			if probeRate += float64(targets) * float64(time.Second) / float64(interval); probeRate > maxProbeRate {
				v.add(field("health_check", "interval"), "%s: health_check: protocols[0..%d] probe %.0f targets per second (targets / interval), at most %d in all", name, i, probeRate, maxProbeRate)
			}
		}
		v.intIn(field("health_check", "rise"), name+": health_check.rise", h.Rise, 0, maxRiseFall)
		v.intIn(field("health_check", "fall"), name+": health_check.fall", h.Fall, 0, maxRiseFall)
		switch h.Check {
		case "", "tcp", "redis", "http", "dns":
		default:
			v.add(field("health_check", "check"), "%s: health_check.check %q: want tcp, redis, http or dns", name, h.Check)
		}
		if set := healthKeys(h); interval == 0 && len(set) > 0 {
			v.add(field("health_check"), "%s: health_check: %s set but no interval: no active check runs; set interval (e.g. \"5s\")", name, strings.Join(set, ", "))
		}
		if h.Path != "" && h.Check != "http" {
			v.add(field("health_check", "path"), "%s: health_check.path: applies only to check: http (check is %q)", name, cmp.Or(h.Check, "tcp"))
		}
		if h.Path != "" && (h.Path[0] != '/' || len(h.Path) > maxHealthPathLen || strings.ContainsFunc(h.Path, func(r rune) bool { return r <= ' ' || r == 0x7f })) {
			v.add(field("health_check", "path"), "%s: health_check.path %q: want /path, at most %d characters, no spaces or control characters", name, h.Path, maxHealthPathLen)
		}
		v.durIn(field("idle_timeout"), name+": idle_timeout", p.IdleTimeout, 0, maxIdleTimeout)
		if _, err := upstream.ParseSource(p.Source); err != nil {
			v.add(field("source"), "%s: %v", name, err)
		}
		if p.IsFallback() {
			fallbacks++
			if fallbacks == 2 {
				at, why := field("fallback"), ""
				if !p.Fallback {
					at, why = where, " (anyprot is the fallback by nature)"
				}
				v.add(at, "%s: a second fallback%s; only one protocol may be the fallback", name, why)
			}
		}
		key := fmt.Sprintf("%s|%v|%v|%v", strings.ToLower(p.Name), p.SNI, p.ALPN, p.Host)
		// A repeated entry that is the fallback still takes what nothing
		// matched (sslh's "second http entry as the default").
		if j, dup := seen[key]; dup && builtin && !p.IsFallback() {
			v.add(where, "%s: same protocol and conditions as protocols[%d]: the second could never match", name, j)
		}
		if _, dup := seen[key]; !dup {
			seen[key] = i
		}
	}
}

// inline is list without the fromFile names it ends with.
func inline(list []string, fromFile int) []string {
	return list[:max(0, len(list)-fromFile)]
}

// maxReported is how many bad entries of one list are reported one by one.
const maxReported = 10

// healthKeys names the health_check keys h sets besides interval.
func healthKeys(h Health) []string {
	var set []string
	for _, k := range []struct {
		key string
		set bool
	}{{"timeout", h.Timeout != 0}, {"rise", h.Rise != 0}, {"fall", h.Fall != 0}, {"check", h.Check != ""}, {"path", h.Path != ""}} {
		if k.set {
			set = append(set, k.key)
		}
	}
	return set
}

// undecodable reports whether the value at path, or the document above it,
// is of a kind that the decoder already reported (not a list, not a
// mapping), so that what stayed empty is not reported again.
func (v *checker) undecodable(path ...string) bool {
	n, found := nodeAt(v.root, path...)
	if n == nil || n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return false
	}
	if !found {
		return n.Kind != yaml.MappingNode
	}
	return n.Kind != yaml.SequenceNode
}

// regexSize returns the number of instructions pattern compiles to, as
// regexp.Compile would (Perl flags, simplified). A pattern whose size,
// estimated from the parse tree, is far over maxRegexInsts is not
// compiled: its counted repetitions would be expanded in memory just to be
// refused; that estimate is returned with exact false.
func regexSize(pattern string) (n int, exact bool, err error) {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return 0, false, err
	}
	if est := regexEstimate(re); est > 4*maxRegexInsts {
		return int(est), false, nil
	}
	prog, err := syntax.Compile(re.Simplify())
	if err != nil {
		return 0, false, err
	}
	return len(prog.Inst), true, nil
}

// regexEstimate is the size regexp/syntax's parser estimates for re (an
// upper bound of the compiled program, counted repetitions multiplied out),
// saturating instead of overflowing.
func regexEstimate(re *syntax.Regexp) int64 {
	const most = 1 << 40
	var size int64
	switch re.Op {
	case syntax.OpLiteral:
		size = int64(len(re.Rune))
	case syntax.OpCapture, syntax.OpStar:
		size = 2 + regexEstimate(re.Sub[0])
	case syntax.OpPlus, syntax.OpQuest:
		size = 1 + regexEstimate(re.Sub[0])
	case syntax.OpConcat, syntax.OpAlternate:
		for _, sub := range re.Sub {
			size = min(most, size+regexEstimate(sub))
		}
		if re.Op == syntax.OpAlternate && len(re.Sub) > 1 {
			size += int64(len(re.Sub)) - 1
		}
	case syntax.OpRepeat:
		sub := regexEstimate(re.Sub[0])
		times := int64(re.Max)
		if re.Max == -1 {
			times = int64(re.Min) + 1
		}
		if times > 0 && sub > most/times {
			return most
		}
		size = times*sub + int64(max(re.Max-re.Min, 0))
	}
	return min(most, max(1, size))
}

// routableBy names the built-in protocols that take every key of k.
func routableBy(k protocols.Keys) string {
	var names []string
	for _, d := range protocols.Descriptors() {
		if k&^d.Routable == 0 {
			names = append(names, d.Name)
		}
	}
	if len(names) == 0 {
		return "cannot be combined: no protocol carries them together"
	}
	return "applies only to " + strings.Join(names, ", ")
}
