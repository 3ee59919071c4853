package identify

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/protocols"
)

// routedCatalogue is every built-in protocol plus the conditional routes a
// real deployment has: TLS by SNI and by ALPN, HTTP by Host (see label).
func routedCatalogue(t testing.TB) []*protocols.Protocol {
	t.Helper()
	ps := catalogue(t) // built-ins (target 127.0.0.1:1) and TLS sni a.example (127.0.0.1:2)
	h2 := protocols.NewTLSProtocol("127.0.0.1:3")
	h2.ALPN = []string{"h2"}
	host := protocols.NewHTTPProtocol("127.0.0.1:4")
	host.Hosts = []string{"host.example"}
	return append(ps, h2, host)
}

// splitFlights are the recorded flights plus the long ones route conditions
// must survive: a real Chromium ClientHello (1,815 bytes, X25519MLKEM768 key
// share, SNI a.example) and an HTTP request whose Host header comes after
// 1,100 bytes of other headers.
func splitFlights(t *testing.T) map[string][]byte {
	t.Helper()
	fl := testnet.Flights(t, "")
	if len(fl["tls-chromium.bin"]) < 1800 {
		t.Fatalf("tls-chromium.bin missing or short: %d bytes", len(fl["tls-chromium.bin"]))
	}
	fl["http-long-headers"] = longHostRequest()
	return fl
}

func longHostRequest() []byte {
	return []byte("GET /index.html HTTP/1.1\r\nUser-Agent: split-test\r\nCookie: " + strings.Repeat("c", 1100) +
		"\r\nHost: host.example\r\nAccept: */*\r\n\r\n")
}

// scriptConn hands out its chunks one per Read (a TCP segment each), then
// reports err (io.EOF when nil). Deadlines are ignored: the script never
// waits.
type scriptConn struct {
	net.Conn
	chunks [][]byte
	err    error
}

func (c *scriptConn) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	if c.chunks[0] = c.chunks[0][n:]; len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

func (c *scriptConn) SetReadDeadline(time.Time) error { return nil }

// prodLimits are the manager's defaults (MinBytes 1024, settle 300 ms).
var prodLimits = Limits{MinBytes: 1024, Timeout: 15 * time.Second, ServerFirstWait: time.Second, SettleWait: 300 * time.Millisecond}

func identifyScript(tb *Table, chunks ...[]byte) Result {
	return tb.Identify(&scriptConn{chunks: chunks}, make([]byte, 32<<10), 0, prodLimits)
}

func resultKey(r Result) string {
	if r.Route == nil {
		return "none/" + r.Failure.String()
	}
	return label(r.Route) + "/" + r.Failure.String()
}

// TestSplitFlightsRouteAsWhole: for every recorded flight, split at every
// offset into two reads, and at random offsets into three, the route (route
// conditions included) is the one the whole flight in one read gives.
func TestSplitFlightsRouteAsWhole(t *testing.T) {
	tb := mustTable(t, routedCatalogue(t)...)
	rng := rand.New(rand.NewPCG(1, 2))
	for name, data := range splitFlights(t) {
		// A split flight may be decided before its last read (the rest is
		// forwarded after the replay), so only the route is compared.
		whole := identifyScript(tb, data)
		for i := 1; i < len(data); i++ {
			got := identifyScript(tb, bytes.Clone(data[:i]), bytes.Clone(data[i:]))
			if resultKey(got) != resultKey(whole) {
				t.Fatalf("%s split at %d: %s after %d bytes, whole flight: %s", name, i, resultKey(got), got.N, resultKey(whole))
			}
		}
		for k := 0; k < 200 && len(data) > 2; k++ {
			a := 1 + rng.IntN(len(data)-1)
			b := 1 + rng.IntN(len(data)-1)
			a, b = min(a, b), max(a, b)
			if a == b {
				continue
			}
			got := identifyScript(tb, bytes.Clone(data[:a]), bytes.Clone(data[a:b]), bytes.Clone(data[b:]))
			if resultKey(got) != resultKey(whole) {
				t.Fatalf("%s split at %d,%d: %s, whole flight: %s", name, a, b, resultKey(got), resultKey(whole))
			}
		}
	}
}

// TestConditionalRoutesOnLongFlights pins the expected routes of the long
// flights, so that "same as whole" cannot hide a wrong whole answer.
func TestConditionalRoutesOnLongFlights(t *testing.T) {
	tb := mustTable(t, routedCatalogue(t)...)
	fl := splitFlights(t)
	for _, c := range []struct{ flight, want string }{
		{"tls-chromium.bin", "TLS[sni=a.example]/ok"}, // SNI a.example outranks ALPN h2
		{"tls-go.bin", "TLS[alpn=h2]/ok"},             // go.example.test, ALPN h2
		{"tls-openssl-nosni.bin", "TLS/ok"},           // neither condition
		{"http-long-headers", "HTTP[host=host.example]/ok"},
		{"http-curl.bin", "HTTP/ok"},
	} {
		if got := identifyScript(tb, fl[c.flight]); resultKey(got) != c.want {
			t.Errorf("%s: got %s, want %s", c.flight, resultKey(got), c.want)
		}
	}
}

// pausedSplits are flights sent in two parts with a pause longer than the
// settle wait between them, cut at, and the route each takes.
var pausedSplits = []struct {
	flight string
	at     int
	want   string
}{
	{"tls-chromium.bin", 1400, "TLS[sni=a.example]/ok"},
	{"tls-chromium.bin", 900, "TLS[sni=a.example]/ok"},
	{"tls-chromium.bin", 3, "TLS[sni=a.example]/ok"},
	{"tls-go.bin", 1100, "TLS[alpn=h2]/ok"},
	{"http-long-headers", 1100, "HTTP[host=host.example]/ok"},
	{"http-long-headers", 20, "HTTP[host=host.example]/ok"},
}

// TestSplitFlightsWithPauses: the first part of a flight, a pause longer
// than the settle wait, then the rest — over a real pipe, as a client behind
// a slow link sends it. Conditional routes still win; only the deadline,
// the buffer or a complete record ends the wait for them.
func TestSplitFlightsWithPauses(t *testing.T) {
	tb := mustTable(t, routedCatalogue(t)...)
	fl := splitFlights(t)
	l := lim // SettleWait 50 ms
	pause := 4 * l.SettleWait
	for _, c := range pausedSplits {
		data := fl[c.flight]
		srv, cli := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			if _, err := cli.Write(data[:c.at]); err != nil {
				return
			}
			time.Sleep(pause) // the stimulus: a gap between two segments
			cli.Write(data[c.at:])
		}()
		res := tb.Identify(srv, make([]byte, MinBuffer), 0, l)
		srv.Close()
		cli.Close()
		<-done
		if resultKey(res) != c.want || res.N != len(data) {
			t.Errorf("%s split at %d with a %v pause: %s after %d bytes, want %s after %d", c.flight, c.at, pause, resultKey(res), res.N, c.want, len(data))
		}
	}
}

// TestIncompleteMetadataEndsAtDeadline: a client that sends part of a
// ClientHello and stops is decided at the identification deadline with the
// best route it matched (the SNI route's condition cannot be checked), not
// held forever and not cut at the settle wait.
func TestIncompleteMetadataEndsAtDeadline(t *testing.T) {
	tb := mustTable(t, routedCatalogue(t)...)
	data := splitFlights(t)["tls-chromium.bin"]
	l := lim
	l.Timeout = 4 * l.SettleWait
	srv, cli := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		cli.Write(data[:1400])
	}()
	start := time.Now()
	res := tb.Identify(srv, make([]byte, MinBuffer), 0, l)
	waited := time.Since(start)
	srv.Close()
	cli.Close()
	<-done
	if resultKey(res) != "TLS/ok" || res.N != 1400 {
		t.Fatalf("got %s after %d bytes", resultKey(res), res.N)
	}
	if waited < l.Timeout {
		t.Fatalf("decided after %v, before the %v deadline", waited, l.Timeout)
	}
}

// TestBufferLimitEndsWait: a ClientHello longer than the buffer is decided
// when the buffer is full; one that spans two records but fits is routed by
// its SNI, however the records are split.
func TestBufferLimitEndsWait(t *testing.T) {
	tb := mustTable(t, routedCatalogue(t)...)
	two := bigClientHello(t, 20<<10)
	for _, at := range []int{1, 5, 1 << 14, 1<<14 + 7, len(two) - 1} {
		res := tb.Identify(&scriptConn{chunks: [][]byte{two[:at], two[at:]}}, make([]byte, 32<<10), 0, prodLimits)
		if resultKey(res) != "TLS[sni=a.example]/ok" {
			t.Fatalf("20 KiB ClientHello split at %d: got %s after %d bytes", at, resultKey(res), res.N)
		}
	}
	hello := bigClientHello(t, 40<<10)
	buf := make([]byte, MinBuffer)
	res := tb.Identify(&scriptConn{chunks: [][]byte{hello}}, buf, 0, prodLimits)
	if resultKey(res) != "TLS/ok" || res.N != len(buf) {
		t.Fatalf("got %s after %d bytes", resultKey(res), res.N)
	}
}

// bigClientHello returns a ClientHello of about size bytes spread over
// full-size records, SNI a.example after a long padding extension.
func bigClientHello(t *testing.T, size int) []byte {
	t.Helper()
	var body []byte
	body = append(body, 3, 3)
	body = append(body, make([]byte, 32)...)
	body = append(body, 0)             // session id
	body = append(body, 0, 2, 0x13, 1) // one suite
	body = append(body, 1, 0)          // null compression
	pad := size - 200
	var exts []byte
	exts = append(exts, 0, 21, byte(pad>>8), byte(pad)) // padding extension
	exts = append(exts, make([]byte, pad)...)
	name := "a.example"
	sni := []byte{0, 0, 0, byte(len(name) + 5), 0, byte(len(name) + 3), 0, 0, byte(len(name))}
	exts = append(exts, append(sni, name...)...)
	body = append(body, byte(len(exts)>>8), byte(len(exts)))
	body = append(body, exts...)
	msg := append([]byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
	var out []byte
	for len(msg) > 0 {
		n := min(len(msg), 1<<14)
		out = append(out, 0x16, 3, 1, byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

// FuzzSplitRoute: any bytes, split anywhere into two reads, route as the
// same bytes in one read.
func FuzzSplitRoute(f *testing.F) {
	for _, name := range []string{"tls-chromium.bin", "http-curl.bin", "websocket-curl.bin", "rtmp-ffmpeg.bin", "ssh-openssh.bin"} {
		data := testnet.Flight(f, name)
		f.Add(data, uint16(len(data)/2))
	}
	f.Add(longHostRequest(), uint16(1100))
	sni := protocols.NewTLSProtocol("127.0.0.1:2")
	sni.SNI = []string{"a.example"}
	host := protocols.NewHTTPProtocol("127.0.0.1:3")
	host.Hosts = []string{"host.example"}
	tb := mustTable(f, append(builtins("127.0.0.1:1"), sni, host)...)
	f.Fuzz(func(t *testing.T, data []byte, at uint16) {
		if len(data) < 2 {
			return
		}
		i := 1 + int(at)%(len(data)-1)
		whole := identifyScript(tb, bytes.Clone(data))
		split := identifyScript(tb, bytes.Clone(data[:i]), bytes.Clone(data[i:]))
		if resultKey(whole) != resultKey(split) {
			t.Fatalf("split at %d: %s, whole: %s", i, resultKey(split), resultKey(whole))
		}
	})
}

// TestDrippingClientBoundedReads: a client that sends its header block a
// byte per segment is decided after MaxReads reads (each read re-runs the
// detectors over the whole buffer), with the best route matched so far;
// one that matched nothing fails as fragmented.
func TestDrippingClientBoundedReads(t *testing.T) {
	tb := mustTable(t, routedCatalogue(t)...)
	drip := func(data []byte) Result {
		chunks := make([][]byte, len(data))
		for i := range data {
			chunks[i] = data[i : i+1]
		}
		return tb.Identify(&scriptConn{chunks: chunks}, make([]byte, 32<<10), 0, prodLimits)
	}
	req := longHostRequest()
	if res := drip(req); resultKey(res) != "HTTP/ok" || res.N != MaxReads {
		t.Fatalf("dripped request: %s after %d bytes, want the default HTTP route after %d", resultKey(res), res.N, MaxReads)
	}
	// A TLS record header claiming 16 KiB, then the body a byte at a time:
	// the TLS detector matches after 6 handshake bytes, so the default TLS
	// route is taken.
	hello := splitFlights(t)["tls-chromium.bin"]
	if res := drip(hello); resultKey(res) != "TLS/ok" || res.N != MaxReads {
		t.Fatalf("dripped ClientHello: %s after %d bytes", resultKey(res), res.N)
	}
	// RTMP's 1,537-byte handshake matches nothing until complete.
	rtmp := splitFlights(t)["rtmp-ffmpeg.bin"]
	if res := drip(rtmp); res.Route != nil || res.Failure != Fragmented || res.N != MaxReads {
		t.Fatalf("dripped RTMP: %s after %d bytes", resultKey(res), res.N)
	}
	// A first flight in MaxReads segments is still routed by its SNI.
	seg := (len(hello) + MaxReads - 1) / MaxReads
	var chunks [][]byte
	for i := 0; i < len(hello); i += seg {
		chunks = append(chunks, hello[i:min(i+seg, len(hello))])
	}
	if res := tb.Identify(&scriptConn{chunks: chunks}, make([]byte, 32<<10), 0, prodLimits); resultKey(res) != "TLS[sni=a.example]/ok" {
		t.Fatalf("ClientHello in %d segments: %s", len(chunks), resultKey(res))
	}
}

// BenchmarkDrippedHeaders: what one client costs that sends 32 KiB of HTTP
// headers a byte per segment (an HTTP Host route keeps the decision open).
func BenchmarkDrippedHeaders(b *testing.B) {
	tb := mustTable(b, routedCatalogue(b)...)
	req := []byte("GET / HTTP/1.1\r\nCookie: " + strings.Repeat("c", 32<<10))
	chunks := make([][]byte, len(req))
	buf := make([]byte, 64<<10)
	for b.Loop() {
		for i := range req {
			chunks[i] = req[i : i+1]
		}
		tb.Identify(&scriptConn{chunks: chunks}, buf, 0, prodLimits)
	}
}
