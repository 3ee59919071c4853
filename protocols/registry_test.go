package protocols

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestRegistry: every descriptor agrees with the protocol its constructor
// builds, and Describe, Lookup and Names agree with Descriptors.
func TestRegistry(t *testing.T) {
	ds := Descriptors()
	if len(ds) == 0 {
		t.Fatal("no descriptors registered")
	}
	var names []string
	for i, d := range ds {
		if i > 0 && strings.ToLower(ds[i-1].Name) >= strings.ToLower(d.Name) {
			t.Errorf("Descriptors not sorted: %s before %s", ds[i-1].Name, d.Name)
		}
		p := d.New("127.0.0.1:1")
		if p.Name != d.Name || p.Target != "127.0.0.1:1" || p.Transports() != d.Transports {
			t.Errorf("%s: constructor gives Name %q, Target %q, transports %v; want transports %v",
				d.Name, p.Name, p.Target, p.Transports(), d.Transports)
		}
		// The protocol is the descriptor's Spec, with the stream detector
		// every Spec not on TCP has.
		want := d.Spec
		if want.Transports&TCP == 0 {
			want.Detect = noMatch
		}
		if got := p.Spec(); !sameSpec(got, want) {
			t.Errorf("%s: constructor's protocol is\n%s\nwant the descriptor's\n%s", d.Name, specString(got), specString(want))
		}
		// A route condition needs metadata, which only an inspector gives:
		// one on every transport the protocol exists on.
		if (d.Routable != 0) != (p.Inspect != nil || p.InspectDatagram != nil) ||
			d.Routable != 0 && (d.Transports&TCP != 0) != (p.Inspect != nil) ||
			d.Routable != 0 && (d.Transports&UDP != 0) != (p.InspectDatagram != nil) {
			t.Errorf("%s: Routable %v, transports %v, but Inspect set %v, InspectDatagram set %v",
				d.Name, d.Routable, d.Transports, p.Inspect != nil, p.InspectDatagram != nil)
		}
		if d.Summary == "" {
			t.Errorf("%s: no summary", d.Name)
		}
		for _, n := range d.YAMLNames() {
			names = append(names, n)
			for _, spelled := range []string{n, strings.ToUpper(n), d.Name} {
				got, ok := Describe(spelled)
				if !ok || got.Name != d.Name {
					t.Errorf("Describe(%q) = %s, %v; want %s", spelled, got.Name, ok, d.Name)
				}
				if ctor, ok := Lookup(spelled); !ok || ctor("x:1").Name != d.Name {
					t.Errorf("Lookup(%q) does not build %s", spelled, d.Name)
				}
			}
		}
	}
	slices.Sort(names)
	if got := Names(); !slices.Equal(got, names) {
		t.Errorf("Names() = %v, want every descriptor's names %v", got, names)
	}
	if _, ok := Describe("nosuchprotocol"); ok {
		t.Error("Describe accepts an unknown name")
	}
	if _, ok := Lookup("nosuchprotocol"); ok {
		t.Error("Lookup accepts an unknown name")
	}
}

// sameSpec reports whether a and b have equal fields, functions compared by
// identity (the same detector, not an equivalent one).
func sameSpec(a, b Spec) bool { return specString(a) == specString(b) }

// specString prints every field of s, a function as its address (nil as 0).
func specString(s Spec) string {
	v := reflect.ValueOf(s)
	var b strings.Builder
	for i := range v.NumField() {
		f := v.Field(i)
		if f.Kind() == reflect.Func {
			fmt.Fprintf(&b, "%s:%#x ", v.Type().Field(i).Name, f.Pointer())
			continue
		}
		fmt.Fprintf(&b, "%s:%v ", v.Type().Field(i).Name, f.Interface())
	}
	return b.String()
}

func TestRegistryConditions(t *testing.T) {
	for name, want := range map[string]Keys{
		"tls": SNIKey | ALPNKey, "http": HostKey, "websocket": HostKey, "webdav": HostKey,
		"ssh": 0, "http2": 0, "postgres": 0,
	} {
		d, _ := Describe(name)
		if d.Routable != want {
			t.Errorf("%s: Routable %v, want %v", name, d.Routable, want)
		}
	}
	var serverFirst []string
	for _, d := range Descriptors() {
		if d.ServerFirst {
			serverFirst = append(serverFirst, d.Name)
		}
	}
	if !slices.Equal(serverFirst, []string{"FTP", "SMTP", "timeout"}) {
		t.Errorf("server-first descriptors %v, want [FTP SMTP timeout]", serverFirst)
	}
}

// constructorTransports are the built-ins that exist on UDP; the others
// are TCP only.
var constructorTransports = map[string]Transports{
	"DNS": TCP | UDP, "OpenVPN": TCP | UDP, "SIP": TCP | UDP, "STUN": TCP | UDP, "DTLS": UDP, "WireGuard": UDP,
}

// TestConstructors: what each exported constructor builds, field by field:
// the fields a built-in sets, each from its descriptor, and nothing else.
func TestConstructors(t *testing.T) {
	for _, c := range []struct {
		new                  Constructor
		name, first          string
		specificity          int
		inspect, serverFirst bool
	}{
		{NewAnyProtProtocol, "anyprot", "\x00", 0, false, false},
		{NewDNSProtocol, "DNS", string(dnsFirstBytes()), 0, false, false},
		{NewDTLSProtocol, "DTLS", "\x16", 0, true, false},
		{NewFTPProtocol, "FTP", "\x00", 0, false, true},
		{NewHTTPProtocol, "HTTP", "GHPDOTCMLUSRABV", 0, true, false},
		{NewHTTPWebDAVProtocol, "HTTP", "GHPDOTCMLUSRABV", 0, true, false},
		{NewHTTP2Protocol, "HTTP2", "P", 0, false, false},
		{NewMQTTProtocol, "MQTT", "\x10", 0, false, false},
		{NewOpenVPNProtocol, "OpenVPN", "\x00", 0, false, false},
		{NewPostgreSQLProtocol, "PostgreSQL", "\x00", 0, false, false},
		{NewRDPProtocol, "RDP", "\x03", 0, false, false},
		{NewRedisProtocol, "Redis", "*PpAaHhIiSsQqEeGgCcDdKkMmFfTtRrLl", 0, false, false},
		{NewRTMPProtocol, "RTMP", "\x03", 0, false, false},
		{NewRTSPProtocol, "RTSP", "ODSPTRAG", 0, false, false},
		{NewSIPProtocol, "SIP", "IRAOBCSNMPUE", 0, false, false},
		{NewSMTPProtocol, "SMTP", "EeHh", 0, false, true},
		{NewSOCKSProtocol, "SOCKS", "\x04\x05", 0, false, false},
		{NewSOCKS4Protocol, "SOCKS4", "\x04", 0, false, false},
		{NewSOCKS5Protocol, "SOCKS5", "\x05", 0, false, false},
		{NewSSHProtocol, "SSH", "S", 0, false, false},
		{NewSTUNProtocol, "STUN", "\x00\x01", 0, false, false},
		{NewTimeoutProtocol, "timeout", "\x00", 0, false, true},
		{NewTLSProtocol, "TLS", "\x16", 0, true, false},
		{NewWebDAVProtocol, "WebDAV", "PMCLUSRAOBV", 1, true, false},
		{NewWebSocketProtocol, "WebSocket", "G", 1, true, false},
		{NewWireGuardProtocol, "WireGuard", "\x01", 0, false, false},
	} {
		p := c.new("127.0.0.1:7")
		got := *p
		on := constructorTransports[c.name]
		if on == 0 {
			on = TCP
		}
		if (got.Detect != nil) != (on&TCP != 0) || (got.Datagram != nil) != (on&UDP != 0) ||
			(got.Inspect != nil || got.InspectDatagram != nil) != c.inspect {
			t.Errorf("%s: Detect set %v, Datagram set %v, Inspect set %v, InspectDatagram set %v; want transports %v, inspect %v",
				c.name, got.Detect != nil, got.Datagram != nil, got.Inspect != nil, got.InspectDatagram != nil, on, c.inspect)
		}
		got.Detect, got.Inspect, got.Datagram, got.InspectDatagram = nil, nil, nil, nil
		want := Protocol{Name: c.name, Target: "127.0.0.1:7", FirstBytes: []byte(c.first), Specificity: c.specificity}
		if c.serverFirst {
			want.EstablishConnection = []EstablishConnection{{}}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: constructor builds %+v, want %+v", c.name, got, want)
		}
		// Each protocol owns its slices: changing one changes neither the
		// registry nor the next protocol built.
		built := string(p.FirstBytes)
		p.FirstBytes[0]++
		if again := c.new("x:1"); string(again.FirstBytes) != built {
			t.Errorf("%s: FirstBytes shared between protocols: %q", c.name, again.FirstBytes)
		}
	}
}

// TestDescribeReturnsCopy: a caller changing a descriptor changes nothing
// in the registry.
func TestDescribeReturnsCopy(t *testing.T) {
	d, _ := Describe("postgres")
	d.Aliases[0] = "changed"
	for _, d := range Descriptors() {
		if d.Name == "PostgreSQL" {
			d.Aliases[0] = "changed too"
		}
	}
	if d, _ := Describe("postgres"); !slices.Equal(d.Aliases, []string{"postgres"}) {
		t.Fatalf("registry changed through a returned descriptor: %v", d.Aliases)
	}
}

func TestRegisterRejects(t *testing.T) {
	before := Names()
	stun := func(name string, aliases ...string) Descriptor {
		d := stunDescriptor
		d.Name, d.Aliases = name, aliases
		return d
	}
	noDetector := stun("Fresh")
	noDetector.Detect = nil
	noDatagram := stun("Fresh")
	noDatagram.Datagram = nil
	noTransports := stun("Fresh")
	noTransports.Transports = 0
	tcpOnly := stun("Fresh")
	tcpOnly.Transports = TCP
	strayInspector := stun("Fresh")
	strayInspector.Datagram, strayInspector.Transports = nil, TCP
	strayInspector.InspectDatagram = inspectDTLS
	straySilence := stun("Fresh")
	straySilence.Silence = time.Second
	for name, c := range map[string]struct {
		d    Descriptor
		ctor Constructor
	}{
		"duplicate name":     {stun("TLS"), NewTLSProtocol},
		"duplicate alias":    {stun("Fresh", "turn"), NewSTUNProtocol},
		"alias twice":        {stun("Fresh", "fresh"), NewSTUNProtocol},
		"upper-case alias":   {stun("Fresh", "FRESH2"), NewSTUNProtocol},
		"no name":            {stun(""), NewSTUNProtocol},
		"no constructor":     {stun("Fresh"), nil},
		"no detector":        {noDetector, NewSTUNProtocol},
		"no datagram":        {noDatagram, NewSTUNProtocol},
		"no transports":      {noTransports, NewSTUNProtocol},
		"datagram on tcp":    {tcpOnly, NewSTUNProtocol},
		"stray inspector":    {strayInspector, NewSTUNProtocol},
		"stray silence":      {straySilence, NewSTUNProtocol},
		"alias of an alias":  {stun("Fresh", "postgres"), NewSTUNProtocol},
		"name of an alias'":  {stun("Postgres"), NewSTUNProtocol},
		"empty alias string": {stun("Fresh", ""), NewSTUNProtocol},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: register did not panic", name)
				}
			}()
			register(c.d, c.ctor)
		}()
	}
	if got := Names(); !slices.Equal(got, before) {
		t.Fatalf("a rejected descriptor changed the registry: %v", got)
	}
}

func TestSuggest(t *testing.T) {
	for in, want := range map[string]string{
		"TSL": "tls", "tls": "tls", "HTTP": "http", "redsi": "redis", "postgre": "postgres",
		"websockets": "websocket", "sokcs5": "socks5", "mqt": "mqtt", "htp2": "http2",
	} {
		if got, ok := Suggest(in); !ok || got != want {
			t.Errorf("Suggest(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "x", "xyzzy", "customproto", "minecraft"} {
		if got, ok := Suggest(in); ok {
			t.Errorf("Suggest(%q) = %q, want no suggestion", in, got)
		}
	}
}

func TestEditDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"tls", "tls", 0}, {"tsl", "tls", 1}, {"stl", "tls", 2}, {"ab", "ba", 1}, {"tl", "tls", 1},
		{"tlsx", "tls", 1}, {"abc", "xyz", 3}, {"a", "abcdef", 3},
	} {
		if got := editDistance(c.a, c.b, 3); got != c.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}

func TestKeys(t *testing.T) {
	if got := (SNIKey | HostKey).Names(); !slices.Equal(got, []string{"sni", "host"}) {
		t.Errorf("Names = %v", got)
	}
	if s := (SNIKey | ALPNKey).String(); s != "sni,alpn" {
		t.Errorf("String = %q", s)
	}
	if s := Keys(0).String(); s != "none" {
		t.Errorf("empty String = %q", s)
	}
	c := Conditions{SNI: []string{"a"}, ALPN: []string{"h2"}}
	if c.Keys() != SNIKey|ALPNKey || (Conditions{}).Keys() != 0 || (Conditions{Hosts: []string{"h"}}).Keys() != HostKey {
		t.Errorf("Conditions.Keys wrong: %v", c.Keys())
	}
}
