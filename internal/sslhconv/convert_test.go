package sslhconv

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/darkit/protoplex/internal/config"
	"github.com/darkit/protoplex/protocols"
)

var update = flag.Bool("update", false, "rewrite the golden testdata/*.yaml")

// testServices stands in for /etc/services, so the goldens do not depend
// on the machine.
func testServices(network, service string) (int, error) {
	ports := map[string]int{"ssh": 22, "https": 443, "xmpp-client": 5222, "daytime": 13, "openvpn": 1194}
	if p, ok := ports[service]; ok {
		return p, nil
	}
	return 0, fmt.Errorf("unknown port %s/%s", network, service)
}

// check parses out as -check does: the real configuration checker.
func check(t *testing.T, name string, out []byte) *config.Config {
	t.Helper()
	c, err := config.Parse(out, name)
	if err != nil {
		t.Fatalf("%s: the converted configuration fails the checker:\n%v\n%s", name, err, out)
	}
	return c
}

// golden compares out with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name string, out []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, out, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update writes it)", err)
	}
	if !bytes.Equal(out, want) {
		t.Fatalf("%s differs from the conversion (go test -update rewrites it); got:\n%s", path, out)
	}
}

// routes is "name target [conditions] [fallback] [server_first]" per
// protocol, as the checker built them.
func routes(t *testing.T, c *config.Config) []string {
	t.Helper()
	var out []string
	for _, p := range c.Protocols {
		s := p.Name + " " + strings.Join(p.Target, ",")
		if len(p.SNI) > 0 {
			s += " sni=" + strings.Join(p.SNI, ",")
		}
		if len(p.ALPN) > 0 {
			s += " alpn=" + strings.Join(p.ALPN, ",")
		}
		if p.Transport != "" {
			s += " " + p.Transport
		}
		if p.IsFallback() {
			s += " fallback"
		}
		if p.ServerFirst {
			s += " server_first"
		}
		out = append(out, s)
	}
	return out
}

// TestConvertFiles: Debian's example.cfg, sslh's own example, basic and
// test configurations convert into configurations the checker accepts,
// and match their goldens.
func TestConvertFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/*.cfg")
	if err != nil || len(files) < 5 {
		t.Fatalf("test configurations: %v %v", files, err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out, err := Convert(Input{File: data, FileName: filepath.Base(f), LookupPort: testServices})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		check(t, f, out)
		golden(t, strings.TrimSuffix(filepath.Base(f), ".cfg")+".yaml", out)
	}
}

// TestDebianExample pins what Debian's example.cfg becomes, route by route.
func TestDebianExample(t *testing.T) {
	data, err := os.ReadFile("testdata/debian-example.cfg")
	if err != nil {
		t.Fatal(err)
	}
	out, err := Convert(Input{File: data, FileName: "example.cfg", LookupPort: testServices})
	if err != nil {
		t.Fatal(err)
	}
	c := check(t, "example.cfg", out)
	want := []string{
		"ssh localhost:22",
		"http localhost:80",
		"tls localhost:5223 sni=im.somethingelse.net alpn=xmpp-client",
		"tls localhost:443 alpn=h2,http/1.1,spdy/1,spdy/2,spdy/3",
		"tls localhost:5222 alpn=xmpp-client",
		"tls localhost:993 sni=mail.rutschle.net,mail.englishintoulouse.com",
		"tls localhost:5222 sni=im.rutschle.net,im.englishintoulouse.com",
		"tls localhost:443",
		"regex localhost:1194",
		"regex-2 localhost:5222",
		"anyprot localhost:443 fallback",
		"timeout localhost:13",
	}
	if got := routes(t, c); !slices.Equal(got, want) {
		t.Fatalf("routes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	s := c.Server
	if !slices.Equal(s.Listen, []string{"thelonious:443", "thelonious:8080"}) || s.ServerFirstWait.Seconds() != 2 || !s.AccessLog || s.TCPKeepAlive == 0 {
		t.Fatalf("server: %+v", s)
	}
	for _, text := range []string{
		`example.cfg:12: user: "nobody": protoplex does not switch users`,
		`example.cfg:14: chroot: "/var/empty"`,
		`example.cfg:13: pidfile: "/var/run/sslh.pid"`,
		`example.cfg:20: syslog_facility: "auth"`,
		`service: "ssh": no libwrap`,
		`LEFT OUT: port "letsencrypt-client" is not a service name`,
		`#   target: "localhost:PORT"`,
	} {
		if !bytes.Contains(out, []byte(text)) {
			t.Errorf("no comment %q in:\n%s", text, out)
		}
	}
}

// TestDebianDaemonOpts: Debian's DAEMON_OPTS as shipped names its
// placeholder; as edited it converts into a configuration the checker
// accepts, SSH taking silent clients and TLS, the last protocol, what
// nothing matched, as sslh does.
func TestDebianDaemonOpts(t *testing.T) {
	data, err := os.ReadFile("testdata/debian-daemon-opts")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	args, err := SplitArgs(lines[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Convert(Input{Args: args}); err == nil || !strings.Contains(err.Error(), `sslh command line: listen host "<change-me>": a placeholder`) {
		t.Fatalf("shipped DAEMON_OPTS: %v", err)
	}
	args, err = SplitArgs(lines[1])
	if err != nil {
		t.Fatal(err)
	}
	out, err := Convert(Input{Args: args})
	if err != nil {
		t.Fatal(err)
	}
	c := check(t, "daemon-opts", out)
	golden(t, "debian-daemon-opts.yaml", out)
	want := []string{"ssh 127.0.0.1:22 server_first", "tls 127.0.0.1:443 fallback"}
	if got := routes(t, c); !slices.Equal(got, want) || !slices.Equal(c.Server.Listen, []string{"0.0.0.0:443"}) {
		t.Fatalf("routes %v listen %v", got, c.Server.Listen)
	}
	if !bytes.Contains(out, []byte(`--user: "sslh": protoplex does not switch users`)) || !bytes.Contains(out, []byte(`--pidfile: "/var/run/sslh/sslh.pid"`)) {
		t.Fatalf("no comments on --user and --pidfile:\n%s", out)
	}
}

// TestArgsOverFile: the command line applies over the file as in sslh: -p
// adds a listener, --ssh replaces the ssh entry's target, --anyprot adds
// the catch-all, -t and --on-timeout replace the file's.
func TestArgsOverFile(t *testing.T) {
	file := []byte(`listen: ({ host: "127.0.0.1"; port: "443"; });
protocols: ( { name: "ssh"; host: "h"; port: "22"; }, { name: "tls"; host: "h"; port: "443"; sni_hostnames: ["a.example"]; } );
`)
	args, err := SplitArgs(`sslh -p '[::1]:443' --ssh=other:2222 --anyprot h:80 -t 20 --on-timeout tls --transparent -F`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Convert(Input{File: file, Args: args}); err == nil || !strings.Contains(err.Error(), "--F needs a value") && !strings.Contains(err.Error(), "needs a value") {
		t.Fatalf("-F without a value: %v", err)
	}
	args = args[:len(args)-1]
	out, err := Convert(Input{File: file, FileName: "a.cfg", Args: args})
	if err != nil {
		t.Fatal(err)
	}
	c := check(t, "a.cfg", out)
	want := []string{"ssh other:2222", "tls h:443 sni=a.example", "anyprot h:80 fallback", "timeout h:443"}
	if got := routes(t, c); !slices.Equal(got, want) {
		t.Fatalf("routes %v, want %v\n%s", got, want, out)
	}
	s := c.Server
	if !slices.Equal(s.Listen, []string{"127.0.0.1:443", "[::1]:443"}) || s.ServerFirstWait.Seconds() != 20 || s.IdentifyTimeout.Seconds() != 35 || !s.Transparent {
		t.Fatalf("server %+v", s)
	}
}

// TestConvertMapping: sslh's probes and options, one by one.
func TestConvertMapping(t *testing.T) {
	conv := func(protos string) (*config.Config, string) {
		t.Helper()
		src := "listen: ({ host: \"0.0.0.0\"; port: \"443\"; keepalive: true; proxyprotocol: true; }, { host: \"0.0.0.0\"; port: \"443\"; is_udp: true; });\nudp_max_connections: 16;\nprotocols: (\n" + protos + "\n);\n"
		out, err := Convert(Input{File: []byte(src), FileName: "m.cfg", LookupPort: testServices})
		if err != nil {
			t.Fatalf("%v\n%s", err, src)
		}
		return check(t, "m.cfg", out), string(out)
	}
	c, out := conv(`{ name: "tinc"; host: "h"; port: "655"; },
 { name: "xmpp"; host: "h"; port: "xmpp-client"; },
 { name: "adb"; host: "h"; port: "5037"; },
 { name: "syslog"; host: "h"; port: "514"; log_level: 0; },
 { name: "socks5"; host: "h"; port: "1080"; proxyprotocol: 2; transparent: true; },
 { name: "msrdp"; host: "h"; port: "3389"; },
 { name: "openvpn"; host: "h"; port: "1194"; is_udp: true; udp_timeout: 30; },
 { name: "teamspeak"; host: "h"; port: "9987"; is_udp: true; },
 { name: "wireguard"; host: "h"; port: "51820"; },
 { name: "ssh"; host: "h"; port: "22"; is_udp: true; },
 { name: "ssh"; host: "h"; port: "22"; },
 { name: "ssh"; host: "h"; port: "2222"; },
 { name: "http"; is_unix: true; host: "/run/nginx.sock"; port: ""; }`)
	want := []string{
		"tinc h:655", "xmpp h:5222", "adb h:5037", "syslog h:514", "socks5 h:1080", "rdp h:3389",
		"openvpn h:1194 udp", "teamspeak h:9987 udp", "ssh h:22 server_first", "http unix:/run/nginx.sock fallback",
	}
	if got := routes(t, c); !slices.Equal(got, want) {
		t.Fatalf("routes\n%s\nwant\n%s\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"), out)
	}
	p := c.Protocols
	if p[0].MatchStartBytes[0] != "3020" || p[1].MatchRegexes[0] != "jabber" || p[4].SendProxy != "v2" || !p[4].Transparent || p[6].UDPIdleTimeout.Seconds() != 30 || p[7].UDPIdleTimeout.Seconds() != 60 {
		t.Fatalf("fields: %+v", p)
	}
	s := c.Server
	if !s.AcceptProxy || !slices.Equal(s.TrustedProxies, []string{"0.0.0.0/0", "::/0"}) || s.MaxUDPFlows != 16 || !slices.Equal(s.ListenUDP, []string{"0.0.0.0:443"}) {
		t.Fatalf("server: %+v", s)
	}
	for _, text := range []string{
		"LEFT OUT: sslh's wireguard probe matches UDP only",
		"LEFT OUT: is_udp: protoplex's ssh exists on TCP only",
		"LEFT OUT: sslh never reached it: m.cfg:14 has the same probe first",
		"fallback: sslh sends what no probe matched to its last protocol (m.cfg:16)",
		"Narrow trusted_proxies to your load balancers' addresses",
		"log_level: 0: protoplex's access log",
	} {
		if !strings.Contains(out, text) {
			t.Errorf("no %q in\n%s", text, out)
		}
	}

	// A conditional last entry: an anyprot with its target keeps sslh's
	// fallback; a catch-all regex in the middle becomes anyprot and a
	// later anyprot is left out.
	c, out = conv(`{ name: "ssh"; host: "h"; port: "22"; }, { name: "tls"; host: "h"; port: "443"; sni_hostnames: ["*.Example.com", "mail?.example.com", "*.*.two.example"]; }`)
	if got := routes(t, c); !slices.Equal(got, []string{"ssh h:22 server_first", "tls h:443 sni=*.example.com,*.two.example", "anyprot h:443 fallback"}) {
		t.Fatalf("routes %v\n%s", got, out)
	}
	if strings.Contains(out, `"*.Example.com": protoplex's wildcard`) || !strings.Contains(out, `"*.*.two.example": protoplex's wildcard is one leading "*.": "*.two.example"`) {
		t.Fatalf("wildcard comments:\n%s", out)
	}
	if !strings.Contains(out, `sni_hostnames "mail?.example.com": a glob protoplex cannot say`) {
		t.Fatalf("no comment on the glob:\n%s", out)
	}
	c, out = conv(`{ name: "regex"; host: "h"; port: "1"; regex_patterns: [ "" ]; }, { name: "ssh"; host: "h"; port: "22"; }, { name: "anyprot"; host: "h"; port: "2"; }`)
	if got := routes(t, c); !slices.Equal(got, []string{"anyprot h:1 fallback", "ssh h:22 server_first"}) || !strings.Contains(out, "LEFT OUT: a second catch-all") {
		t.Fatalf("routes %v\n%s", got, out)
	}
	// on-timeout naming a conditional entry: a timeout route with its target.
	src := "listen: ({ host: \"h\"; port: \"1\"; });\non-timeout: \"tls\";\nprotocols: ( { name: \"tls\"; host: \"h\"; port: \"443\"; alpn_protocols: [\"h2\"]; }, { name: \"anyprot\"; host: \"h\"; port: \"80\"; } );\n"
	raw, err := Convert(Input{File: []byte(src)})
	if err != nil {
		t.Fatal(err)
	}
	if got := routes(t, check(t, "t.cfg", raw)); !slices.Equal(got, []string{"tls h:443 alpn=h2", "anyprot h:80 fallback", "timeout h:443"}) {
		t.Fatalf("routes %v\n%s", got, raw)
	}
}

// TestRegexTranslation: sslh's patterns (PCRE over bytes, decoded from
// libconfig's \xNN) in Go's syntax.
func TestRegexTranslation(t *testing.T) {
	for _, c := range []struct {
		in, want string
		high     bool
	}{
		{"jabber", "jabber", false},
		{"^\x00[\x0d-\xff]$", `^\x00[\x0D-\xFF]$`, true},
		{"Q050", "Q050", false},
		{"a\\\x01b", `a\x01b`, false},
		{`\\` + "\x01", `\\\x01`, false},
	} {
		got, high := goRegex(c.in)
		if got != c.want || high != c.high {
			t.Errorf("%q: %q %v, want %q %v", c.in, got, high, c.want, c.high)
		}
	}
}

// TestErrorsNameFileAndLine: what sslh would refuse, and what protoplex
// cannot take, is an error at its file:line.
func TestErrorsNameFileAndLine(t *testing.T) {
	const ok = "listen: ({ host: \"h\"; port: \"1\"; });\n"
	for _, c := range []struct{ src, want string }{
		{"listen: ({ host: \"h\"; port: \"1\" );", `e.cfg:1: ')' where the group opened on line 1 wants "}"`},
		{ok + "protocols: (\n  { name: \"ssh\"; host: \"h\"; port: \"22\"; }\n  { name: \"tls\" }\n);", `e.cfg:4: want ',' or ')' in a list ( ), got "{"`},
		{ok + "timeout: \"2\";", "e.cfg:2: timeout: want an integer, got a string"},
		{ok + "protocols: ( { name: \"shh\"; host: \"h\"; port: \"22\"; } );", `e.cfg:2: protocols: "shh" is not an sslh probe`},
		{ok + "protocols: ( { name: \"ssh\"; host: \"h\"; port: \"99999\"; } );", `e.cfg:2: protocols "ssh" h:99999: port 99999 is not in 1..65535`},
		{ok + "protocols: ( { name: \"ssh\"; host: \"h\nx\"; port: \"22\"; } );", "e.cfg:2: string not closed on its line"},
		{ok + "@include \"other.cfg\"\n", "e.cfg:2: @include: not supported"},
		{ok + "/* open", "e.cfg:2: comment /* never closed with */"},
		{ok + "timeout: 2;\ntimeout: 3;", `e.cfg:3: setting "timeout" is given twice (first on line 2)`},
		{ok + "on-timeout: \"a\\qb\";", `e.cfg:2: unknown escape \q in a string`},
		{ok + "protocols: ( { name: \"ssh\"; host: \"h\"; port: \"22\" } );\nx: " + strings.Repeat("(", 40) + strings.Repeat(")", 40) + ";", "e.cfg:3: nested deeper than 16 levels"},
		{ok + "protocols: ( { name: \"regex\"; host: \"h\"; port: \"1\"; regex_patterns: []; } );", `e.cfg:2: protocols "regex": regex_patterns is empty`},
		{"protocols: ( { name: \"ssh\"; host: \"h\"; port: \"22\"; } );", "sslh command line: no TCP listen address"},
		{ok, "sslh command line: no protocols"},
		{ok + "protocols: ( { name: \"ssh\"; host: \"h\"; port: \"22\"; sni_hostnames: [ 1 ]; } );", "e.cfg:2: sni_hostnames: want strings, got an integer"},
		{ok + "protocols: ( { name: \"tls\"; host: \"h\"; port: \"22\"; sni_hostnames: [ \"a\\x01\" ]; } );", `e.cfg:2: protocols "tls": "a\x01": want printable names`},
		{ok + "protocols: ( { name: \"http\"; is_unix: true; host: \"/run/\\xff\"; port: \"\"; } );", `e.cfg:2: protocols "http": is_unix wants an absolute path as host, got "/run/\xff"`},
	} {
		_, err := Convert(Input{File: []byte(c.src), FileName: "e.cfg"})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q:\n got %v\nwant %s", c.src, err, c.want)
		}
	}
	for _, c := range []struct{ args, want string }{
		{"--ssh", "--ssh needs a value"},
		{"-p h:1 --ssh 'not a host':22", `protocols "ssh" host "not a host": not a host name or an IP address`},
		{"--sshh h:22", "--sshh: not an sslh option"},
		{"-p h:1 --ssh h", `--ssh "h": want HOST:PORT`},
		{"-p h:1 --ssh h:22 -Fsslh.cfg", "-F sslh.cfg: give the configuration file to convert with -from-sslh sslh.cfg"},
		{"-p h:1 --ssh h:22 stray", `"stray": not an option`},
		{"-p h:1 --ssh h:22 -t soon", `--timeout "soon": want a number of seconds`},
		{"-p h:1 --ssh h:22 -f=1", "-f=1: -f takes no value"},
	} {
		args, err := SplitArgs(c.args)
		if err == nil {
			_, err = Convert(Input{Args: args})
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q:\n got %v\nwant %s", c.args, err, c.want)
		}
	}
}

// TestBounds: hostile sizes are refused before they cost anything.
func TestBounds(t *testing.T) {
	big := bytes.Repeat([]byte("#"), MaxInput+1)
	if _, err := Convert(Input{File: big, FileName: "big.cfg"}); err == nil || !strings.Contains(err.Error(), "big.cfg:1:") {
		t.Fatalf("a file over MaxInput: %v", err)
	}
	if _, err := Convert(Input{Args: make([]string, MaxArgs+1)}); err == nil || !strings.Contains(err.Error(), "arguments, at most") {
		t.Fatalf("too many arguments: %v", err)
	}
	settings := make([]string, 50_000)
	for i := range settings {
		settings[i] = fmt.Sprintf("s%d: 1;", i)
	}
	if _, err := Convert(Input{File: []byte(strings.Join(settings, "\n")), FileName: "s.cfg"}); err == nil || !strings.Contains(err.Error(), "no protocols") {
		t.Fatalf("50,000 settings: %v", err) // parsed in linear time: each name is looked up in a map
	}
	protos := "listen: ({host:\"h\";port:\"1\";});\nprotocols: (" + strings.Repeat(`{name:"ssh";host:"h";port:"22";},`, maxProtocols+1) + ");"
	if _, err := Convert(Input{File: []byte(protos), FileName: "p.cfg"}); err == nil || !strings.Contains(err.Error(), "1025 protocols entries, protoplex routes at most 1024") {
		t.Fatalf("too many protocols: %v", err)
	}
	many := "x: [" + strings.Repeat("1,", maxValues) + "1];"
	if _, err := Convert(Input{File: []byte(many), FileName: "m.cfg"}); err == nil || !strings.Contains(err.Error(), "more than 100000 values") {
		t.Fatalf("too many values: %v", err)
	}
}

// TestSplitArgs: shell words, DAEMON_OPTS= and the program name.
func TestSplitArgs(t *testing.T) {
	for in, want := range map[string][]string{
		`DAEMON_OPTS="--user sslh -p 0.0.0.0:443"`:  {"--user", "sslh", "-p", "0.0.0.0:443"},
		`/usr/sbin/sslh --ssh 'a b':22 x\ y "q\"z"`: {"--ssh", "a b:22", "x y", `q"z`},
		`  `: nil,
	} {
		got, err := SplitArgs(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("%q: %q %v, want %q", in, got, err, want)
		}
	}
	for _, in := range []string{`'open`, `"open`} {
		if _, err := SplitArgs(in); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

// FuzzConvert: no input panics or escapes its quoting: what converts is
// YAML with the two sections only, every protocols entry comes from an
// input entry (at most two added: the fallback and the silence route), and
// the checker accepts it but for what only the checker measures (a regex's
// compiled size, no entry left, a port bound twice), which the CLI
// reports.
func FuzzConvert(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.cfg")
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, "")
	}
	f.Add([]byte(`listen: ({host:"h";port:"1";}); protocols: ({name:"regex";host:"h\"\n";port:"2";regex_patterns:["\x0a- name: x"];});`), "")
	f.Add([]byte(nil), "--user sslh --listen 0.0.0.0:443 --ssh 127.0.0.1:22 --ssl 127.0.0.1:443")
	f.Fuzz(func(t *testing.T, data []byte, line string) {
		args, err := SplitArgs(line)
		if err != nil {
			return
		}
		out, err := Convert(Input{File: data, FileName: "f.cfg", Args: args, LookupPort: testServices})
		if err != nil {
			return
		}
		var doc map[string]yaml.Node
		if err := yaml.Unmarshal(out, &doc); err != nil {
			t.Fatalf("not YAML: %v\n%s", err, out)
		}
		allLeftOut := !bytes.Contains(out, []byte("\n  - name: ")) // "protocols:" then comments only
		if len(doc) != 2 || doc["server"].Kind != yaml.MappingNode || doc["protocols"].Kind != yaml.SequenceNode && !allLeftOut {
			t.Fatalf("sections %v:\n%s", doc, out)
		}
		root, perr := parseLibconfig(data)
		n := 0
		if perr == nil {
			if s := root.field("protocols"); s != nil {
				n = len(s.v.items)
			}
		}
		if got := len(doc["protocols"].Content); got > n+len(args)+2 {
			t.Fatalf("%d protocols from %d entries:\n%s", got, n, out)
		}
		if _, err := config.Parse(out, "c.yaml"); err != nil {
			known := false
			for _, k := range []string{"compiles to", "no protocols", "listed twice", "also server.listen"} {
				known = known || strings.Contains(err.Error(), k)
			}
			if !known {
				t.Fatalf("the checker refuses the conversion: %v\n%s", err, out)
			}
		}
		for _, e := range doc["protocols"].Content {
			var p struct{ Name string }
			if err := e.Decode(&p); err != nil {
				t.Fatal(err)
			}
			if _, builtin := protocols.Describe(p.Name); !builtin && !strings.HasPrefix(p.Name, "regex") && userProbes[strings.SplitN(p.Name, "-", 2)[0]].how == "" {
				t.Fatalf("protocol %q from nowhere:\n%s", p.Name, out)
			}
		}
	})
}
