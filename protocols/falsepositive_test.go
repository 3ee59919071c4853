package protocols

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/darkit/protoplex/internal/testnet"
)

// TestFalsePositiveRates feeds N buffers of five families to every built-in
// detector and counts the matches:
//
//   - random: uniformly random bytes, length uniform in 1..fpMaxLen;
//   - printable: 1–3 lines of 1–8 random printable words, each line ending
//     in CRLF (upper-case, lower-case or any-printable words);
//   - zeros, 0xff: one byte repeated, random length;
//   - adversarial: random bytes behind the first 1–4 bytes of a random
//     recorded first flight (magic-byte collisions).
//
// Assertions:
//   - every match, in every family, satisfies its detector's fpSpec.explain:
//     the magic bytes or the verb the protocol defines (for text protocols,
//     a real method/command followed by its separator);
//   - zeros and 0xff: no detector matches at all;
//   - printable: binary detectors never match;
//   - random: each detector's count stays below a Poisson bound computed
//     from fpSpec.pRandom, an upper bound on the probability that a random
//     buffer carries the detector's fixed bytes (derived next to each spec).
//     The bound is the count exceeded with probability < 1e-9, so it fails
//     when a detector accepts more than its magic bytes allow.
//
// N is 1,000,000; 20,000 with -short or -race (make test runs both).
func TestFalsePositiveRates(t *testing.T) {
	n := 1_000_000
	if testing.Short() || raceEnabled {
		n = 20_000
	}
	dets := fpDetectors(t)
	prefixes := fpFlightPrefixes(t)

	families := []fpFamily{
		{"random", fpRandom},
		{"printable", fpPrintable},
		{"zeros", fpRepeat(0x00)},
		{"0xff", fpRepeat(0xff)},
		{"adversarial", fpAdversarial(prefixes)},
	}
	res := make([]fpResult, len(families))
	var wg sync.WaitGroup
	for fi := range families {
		wg.Go(func() { res[fi] = fpRun(families[fi], fi, n, dets) })
	}
	wg.Wait()

	// The table, for docs/protocols.md.
	var sb strings.Builder
	fmt.Fprintf(&sb, "N = %d buffers per family\n\n| detector |", n)
	for _, f := range families {
		fmt.Fprintf(&sb, " %s |", f.name)
	}
	sb.WriteString(" random: bound (expected) |\n|---|")
	for range families {
		sb.WriteString("---|")
	}
	sb.WriteString("---|\n")
	for di, d := range dets {
		fmt.Fprintf(&sb, "| %s |", d.name)
		for fi := range families {
			sb.WriteString(" " + fpRate(res[fi].matches[di], n) + " |")
		}
		lambda := float64(n) * d.pRandom
		fmt.Fprintf(&sb, " ≤ %d (%.3g) |\n", fpPoissonBound(lambda), lambda)
	}
	sb.WriteString("| any |")
	for fi := range families {
		sb.WriteString(" " + fpRate(res[fi].any, n) + " |")
	}
	sb.WriteString(" |\n")
	t.Logf("false-positive rates:\n%s", sb.String())

	for fi, f := range families {
		for di, d := range dets {
			got := res[fi].matches[di]
			if ex := res[fi].unexplained[di]; ex != nil {
				t.Errorf("%s: %s matched %d buffers its magic bytes do not explain, e.g. %q", f.name, d.name, res[fi].nUnexplained[di], truncate(ex))
			}
			switch {
			case (f.name == "zeros" || f.name == "0xff") && got != 0:
				t.Errorf("%s: %s matched %d buffers, want 0", f.name, d.name, got)
			case f.name == "printable" && !d.text && got != 0:
				t.Errorf("%s: binary detector %s matched %d buffers, want 0", f.name, d.name, got)
			case f.name == "random":
				if bound := fpPoissonBound(float64(n) * d.pRandom); got > bound {
					t.Errorf("random: %s matched %d buffers, bound %d (p ≤ %.3g)", d.name, got, bound, d.pRandom)
				}
			}
		}
	}
}

const (
	fpMaxLen = 2048
	fpSeed1  = 0x70726f746f706c65 // "protople"
	fpSeed2  = 0x7866616c7365706f // "xfalsepo"
)

type fpFamily struct {
	name string
	// fill writes the next buffer into buf (cap fpMaxLen) and returns it.
	fill func(r *rand.Rand, buf []byte) []byte
}

type fpResult struct {
	matches      []int
	nUnexplained []int
	unexplained  [][]byte // first unexplained match per detector
	any          int      // buffers matched by at least one detector
}

func fpRun(f fpFamily, fi, n int, dets []fpSpec) fpResult {
	r := rand.New(rand.NewPCG(fpSeed1, fpSeed2+uint64(fi)))
	res := fpResult{matches: make([]int, len(dets)), nUnexplained: make([]int, len(dets)), unexplained: make([][]byte, len(dets))}
	buf := make([]byte, fpMaxLen)
	for range n {
		data := f.fill(r, buf)
		hit := false
		for di := range dets {
			if dets[di].detect(data) != Match {
				continue
			}
			hit = true
			res.matches[di]++
			if !dets[di].explain(data) {
				res.nUnexplained[di]++
				if res.unexplained[di] == nil {
					res.unexplained[di] = bytes.Clone(data)
				}
			}
		}
		if hit {
			res.any++
		}
	}
	return res
}

func fpLen(r *rand.Rand, min int) int { return min + r.IntN(fpMaxLen-min+1) }

func fpFillRandom(r *rand.Rand, b []byte) {
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, r.Uint64())
		b = b[8:]
	}
	for i := range b {
		b[i] = byte(r.Uint32())
	}
}

func fpRandom(r *rand.Rand, buf []byte) []byte {
	data := buf[:fpLen(r, 1)]
	fpFillRandom(r, data)
	return data
}

func fpRepeat(c byte) func(*rand.Rand, []byte) []byte {
	return func(r *rand.Rand, buf []byte) []byte {
		data := buf[:fpLen(r, 1)]
		for i := range data {
			data[i] = c
		}
		return data
	}
}

func fpPrintable(r *rand.Rand, buf []byte) []byte {
	const upper, lower = "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz"
	data := buf[:0]
	for range 1 + r.IntN(3) {
		for w := range 1 + r.IntN(8) {
			if w > 0 {
				data = append(data, ' ')
			}
			kind := r.IntN(3)
			for range 1 + r.IntN(10) {
				switch kind {
				case 0:
					data = append(data, upper[r.IntN(26)])
				case 1:
					data = append(data, lower[r.IntN(26)])
				default:
					data = append(data, byte(0x21+r.IntN(0x7e-0x21+1)))
				}
			}
		}
		data = append(data, '\r', '\n')
	}
	return data
}

func fpAdversarial(prefixes [][]byte) func(*rand.Rand, []byte) []byte {
	return func(r *rand.Rand, buf []byte) []byte {
		p := prefixes[r.IntN(len(prefixes))]
		k := 1 + r.IntN(min(4, len(p)))
		data := buf[:fpLen(r, k)]
		copy(data, p[:k])
		fpFillRandom(r, data[k:])
		return data
	}
}

// fpFlightPrefixes returns the first 4 bytes of every recorded flight.
func fpFlightPrefixes(t *testing.T) [][]byte {
	t.Helper()
	flights := testnet.Flights(t, "")
	names := slices.Sorted(maps.Keys(flights)) // deterministic whatever the map order
	var out [][]byte
	for _, name := range names {
		if data := flights[name]; len(data) > 0 {
			out = append(out, data[:min(4, len(data))])
		}
	}
	if len(out) == 0 {
		t.Fatal("no recorded flights")
	}
	return out
}

func fpRate(matches, n int) string {
	return fmt.Sprintf("%d (%.2g)", matches, float64(matches)/float64(n))
}

// fpPoissonBound is the smallest k with P(X > k) < 1e-9 for X ~ Poisson(λ).
func fpPoissonBound(lambda float64) int {
	if lambda <= 0 {
		return 0
	}
	cdf := 0.0
	for k := 0; ; k++ {
		lg, _ := math.Lgamma(float64(k + 1))
		cdf += math.Exp(-lambda + float64(k)*math.Log(lambda) - lg)
		if 1-cdf < 1e-9 {
			return k
		}
	}
}

// fpSpec is what the test knows about one detector.
type fpSpec struct {
	name   string // lower-case Protocol.Name
	detect DetectFunc
	// text: a text protocol, which may match printable lines that start
	// with one of its verbs; binary ones must never match them.
	text bool
	// explain is a necessary condition of a match: the detector's magic
	// bytes, or for text protocols the verb and separator it defines.
	explain func([]byte) bool
	// pRandom bounds P(Match) for a buffer of the random family.
	pRandom float64
}

// fpDetectors returns one spec per registered built-in protocol on TCP,
// sorted by name. A new built-in without a spec
// fails the test: its false-positive rate must be thought about.
func fpDetectors(t *testing.T) []fpSpec {
	t.Helper()
	specs := fpSpecs()
	var out []fpSpec
	for _, d := range Descriptors() {
		if d.Transports&TCP == 0 {
			continue // datagram detectors: TestDatagramFalsePositives
		}
		p := d.New("x:1")
		name := strings.ToLower(d.Name)
		s, ok := specs[name]
		if !ok {
			t.Fatalf("built-in %s has no false-positive spec in fpSpecs", p.Name)
		}
		s.name, s.detect = name, p.Detector()
		out = append(out, s)
	}
	return out
}

// Helpers for the probability bounds: fpB(k) is the chance of k fixed bytes.
func fpB(k int) float64 { return math.Pow(256, -float64(k)) }

// fpLenAtLeast is P(length ≥ m) for the random family.
func fpLenAtLeast(m int) float64 {
	return math.Max(0, math.Min(1, float64(fpMaxLen-m+1)/fpMaxLen))
}

// fpMethods is Σ 256^-(len(m)+1) over methods: a method and its space.
func fpMethods(methods []string) float64 {
	s := 0.0
	for _, m := range methods {
		s += fpB(len(m) + 1)
	}
	return s
}

func fpHasMethod(data []byte, methods []string) bool {
	for _, m := range methods {
		if bytes.HasPrefix(data, []byte(m+" ")) {
			return true
		}
	}
	return false
}

func fpHasPrefixFold(data []byte, prefixes ...string) bool {
	for _, p := range prefixes {
		if len(data) >= len(p) && equalFoldASCII(data[:len(p)], p) {
			return true
		}
	}
	return false
}

func fpSpecs() map[string]fpSpec {
	socks5 := func(d []byte) bool { return len(d) >= 3 && d[0] == 5 && d[1] >= 1 }
	socks4 := func(d []byte) bool {
		return len(d) >= 9 && d[0] == 4 && (d[1] == 1 || d[1] == 2) && bytes.IndexByte(d[8:], 0) >= 0
	}
	// SOCKS5: 0x05, n ≥ 1, n method bytes each one of the 137 accepted
	// codes (0–9, 0x80–0xFE).
	pSOCKS5 := 0.0
	for n := 1; n <= 255; n++ {
		pSOCKS5 += fpB(2) * math.Pow(137.0/256, float64(n)) * fpLenAtLeast(2+n)
	}
	// SOCKS4: 0x04, command 1 or 2, then a user id of printable bytes
	// ended by a NUL: Σ_k (95/256)^k · 1/256.
	pSOCKS4 := fpB(1) * 2 * fpB(1) * fpB(1) / (1 - 95.0/256)
	// OpenVPN: length n in 14..2048, opcode byte 0x38 or 0x50, all n bytes
	// present.
	pOpenVPN := 0.0
	for n := 14; n <= 2048; n++ {
		pOpenVPN += fpB(2) * 2 * fpB(1) * fpLenAtLeast(2+n)
	}
	// Redis inline: a listed command in any case, then a space, tab, CR or
	// LF. RESP: '*', 1–4 digits, CRLF, '$', 1–4 digits, CRLF; Σ over digit
	// counts of 9·10^(a-1)/256^a ≤ (9/256)/(1-10/256).
	pRedis := 0.0
	for _, c := range redisInlineCommands {
		pRedis += math.Pow(2, float64(len(c))) * fpB(len(c)) * 4 * fpB(1)
	}
	digits := (9.0 / 256) / (1 - 10.0/256)
	pRedis += fpB(6) * digits * digits

	return map[string]fpSpec{
		"http": {text: true, explain: func(d []byte) bool { return fpHasMethod(d, httpMethods) },
			// method, space, and "HTTP/1." right after the target.
			pRandom: fpMethods(httpMethods) * fpB(7)},
		"webdav": {text: true, explain: func(d []byte) bool { return fpHasMethod(d, webdavMethods) },
			pRandom: fpMethods(webdavMethods) * fpB(7)},
		"websocket": {text: true, explain: func(d []byte) bool { return bytes.HasPrefix(d, []byte("GET ")) },
			// "GET ", "HTTP/1.1", an Upgrade header.
			pRandom: fpB(4) * fpB(8)},
		"sip": {text: true, explain: func(d []byte) bool {
			return fpHasMethod(d, sipMethods) && bytes.Contains(d, []byte(" sip")) && bytes.Contains(d, []byte(" SIP/2.0"))
		},
			// method, space, "sip:" (or "sips:"), "SIP/2.0" ending the line.
			pRandom: fpMethods(sipMethods) * 2 * fpB(4) * fpB(7)},
		"rtsp": {text: true, explain: func(d []byte) bool {
			return fpHasMethod(d, rtspMethods) && bytes.Contains(d, []byte(" RTSP/1.0"))
		},
			pRandom: fpMethods(rtspMethods) * fpB(8)},
		"ssh": {text: true, explain: func(d []byte) bool { return bytes.HasPrefix(d, []byte("SSH-")) },
			pRandom: fpB(8) + fpB(9)},
		"http2": {text: true, explain: func(d []byte) bool { return bytes.HasPrefix(d, []byte(http2Preface)) },
			pRandom: fpB(24)},
		"smtp": {text: true, explain: func(d []byte) bool { return fpHasPrefixFold(d, "ehlo ", "helo ") },
			// two verbs, 16 letter cases each, and the space.
			pRandom: 2 * 16 * fpB(5)},
		"redis": {text: true, explain: func(d []byte) bool {
			if len(d) >= 2 && d[0] == '*' && d[1] >= '1' && d[1] <= '9' {
				return true
			}
			for _, c := range redisInlineCommands {
				if fpHasPrefixFold(d, strings.ToLower(c)) && len(d) > len(c) && strings.IndexByte(" \t\r\n", d[len(c)]) >= 0 {
					return true
				}
			}
			return false
		}, pRandom: pRedis},

		"tls": {explain: func(d []byte) bool { return len(d) >= 11 && d[0] == 0x16 && d[1] == 3 && d[2] <= 4 },
			// 0x16, 3, version ≤ 4; handshake type 1, client_version 3, ≤ 4.
			pRandom: fpB(2) * 5 * fpB(1) * fpB(2) * 5 * fpB(1)},
		"mqtt": {explain: func(d []byte) bool {
			head := d[:min(len(d), 16)]
			return d[0] == 0x10 && (bytes.Contains(head, []byte("MQTT")) || bytes.Contains(head, []byte("MQIsdp")))
		},
			// 0x10, name length 4 or 6, the name (≥ 4 bytes), level.
			pRandom: fpB(1) * 2 * fpB(2) * fpB(4) * 2 * fpB(1)},
		"socks5":  {explain: socks5, pRandom: pSOCKS5},
		"socks4":  {explain: socks4, pRandom: pSOCKS4},
		"socks":   {explain: func(d []byte) bool { return socks4(d) || socks5(d) }, pRandom: pSOCKS4 + pSOCKS5},
		"openvpn": {explain: func(d []byte) bool { return len(d) >= 16 && d[0] <= 8 && (d[2] == 0x38 || d[2] == 0x50) }, pRandom: pOpenVPN},
		"postgresql": {explain: func(d []byte) bool {
			if len(d) < 8 || d[0] != 0 || d[1] != 0 {
				return false
			}
			switch binary.BigEndian.Uint32(d[4:8]) {
			case pgSSLRequest, pgGSSENC, pgCancel, pgProtocol3:
				return true
			}
			return false
		},
			// 00 00; then 00 08 + SSL/GSSENC code, 00 10 + cancel code, or
			// a length 9–10000 + 00 03 00 00.
			pRandom: fpB(2) * (3*fpB(6) + 9992*fpB(2)*fpB(4))},
		"dns": {explain: func(d []byte) bool { return len(d) >= 19 && d[0] <= 1 && d[4]&0x80 == 0 },
			// length 17–511 (495 of 65536), QR=0 + opcode 0/4/5 + Z=0
			// (3/64), QDCOUNT 1–16, QCLASS 1/3/4/254/255.
			pRandom: 495 * fpB(2) * 3.0 / 64 * 16 * fpB(2) * 5 * fpB(2)},
		"stun": {explain: func(d []byte) bool { return len(d) >= 8 && bytes.Equal(d[4:8], []byte{0x21, 0x12, 0xa4, 0x42}) },
			// top bits 00, length % 4 == 0, the magic cookie.
			pRandom: 1.0 / 16 * fpB(4)},
		"rdp": {explain: func(d []byte) bool { return len(d) >= 6 && d[0] == 3 && d[1] == 0 && d[5]&0xf0 == 0xe0 },
			// 03 00, TPKT length 11–4096, LI = length-5, CR code.
			pRandom: fpB(2) * 4086 * fpB(2) * fpB(1) / 16},
		"rtmp": {explain: func(d []byte) bool { return len(d) >= rtmpHandshake && d[0] == 3 },
			// By design: C1 is random, so C0 (0x03) and 1537 bytes are all
			// there is to check.
			pRandom: fpB(1) * fpLenAtLeast(rtmpHandshake)},
		"ftp":     {explain: func([]byte) bool { return false }, pRandom: 0},
		"anyprot": {explain: func([]byte) bool { return false }, pRandom: 0},
		"timeout": {explain: func([]byte) bool { return false }, pRandom: 0},
	}
}
