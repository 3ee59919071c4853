package protocols

import "testing"

func TestNormalizeName(t *testing.T) {
	for in, want := range map[string]string{
		"Example.COM":    "example.com",
		" example.com. ": "example.com",
		"*.Example.com":  "*.example.com",
		"[::1]":          "::1",
		"[2001:DB8::1]":  "2001:db8::1",
		"":               "",
		"ÄB":             "Äb", // ASCII only: IDNs are punycode on the wire
	} {
		if got := NormalizeName(in); got != want {
			t.Errorf("NormalizeName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAccepts(t *testing.T) {
	cases := []struct {
		name string
		p    Protocol
		md   Metadata
		want bool
	}{
		{"no conditions", Protocol{}, Metadata{}, true},
		{"sni exact", Protocol{SNI: []string{"a.example.com"}}, Metadata{SNI: "a.example.com"}, true},
		{"sni case", Protocol{SNI: []string{"A.Example.COM"}}, Metadata{SNI: "a.example.com"}, true},
		{"sni case md", Protocol{SNI: []string{"a.example.com"}}, Metadata{SNI: "A.EXAMPLE.com"}, true},
		{"sni trailing dot", Protocol{SNI: []string{"a.example.com."}}, Metadata{SNI: "a.example.com"}, true},
		{"sni other", Protocol{SNI: []string{"a.example.com"}}, Metadata{SNI: "b.example.com"}, false},
		{"sni missing", Protocol{SNI: []string{"a.example.com"}}, Metadata{}, false},
		{"sni second entry", Protocol{SNI: []string{"x.org", "a.example.com"}}, Metadata{SNI: "a.example.com"}, true},
		{"wildcard one label", Protocol{SNI: []string{"*.example.com"}}, Metadata{SNI: "a.example.com"}, true},
		{"wildcard deep", Protocol{SNI: []string{"*.example.com"}}, Metadata{SNI: "a.b.example.com"}, true},
		{"wildcard not apex", Protocol{SNI: []string{"*.example.com"}}, Metadata{SNI: "example.com"}, false},
		{"wildcard not suffix word", Protocol{SNI: []string{"*.example.com"}}, Metadata{SNI: "badexample.com"}, false},
		{"wildcard empty label", Protocol{SNI: []string{"*.example.com"}}, Metadata{SNI: ".example.com"}, false},
		{"wildcard case", Protocol{SNI: []string{"*.EXAMPLE.com"}}, Metadata{SNI: "X.example.COM"}, true},
		{"wildcard other domain", Protocol{SNI: []string{"*.example.com"}}, Metadata{SNI: "a.example.org"}, false},
		{"unicode fold", Protocol{SNI: []string{"s.example"}}, Metadata{SNI: "\u017f.example"}, false},
		{"alpn any", Protocol{ALPN: []string{"h2"}}, Metadata{ALPN: []string{"http/1.1", "h2"}}, true},
		{"alpn none", Protocol{ALPN: []string{"h2"}}, Metadata{ALPN: []string{"http/1.1"}}, false},
		{"alpn missing", Protocol{ALPN: []string{"h2"}}, Metadata{}, false},
		{"alpn exact case", Protocol{ALPN: []string{"h2"}}, Metadata{ALPN: []string{"H2"}}, false},
		{"host exact", Protocol{Hosts: []string{"www.example.com"}}, Metadata{Host: "www.example.com"}, true},
		{"host wildcard", Protocol{Hosts: []string{"*.example.com"}}, Metadata{Host: "api.example.com"}, true},
		{"host other", Protocol{Hosts: []string{"*.example.com"}}, Metadata{Host: "example.net"}, false},
		{"host ipv6 brackets", Protocol{Hosts: []string{"[::1]"}}, Metadata{Host: "::1"}, true},
		{"all hold", Protocol{SNI: []string{"*.example.com"}, ALPN: []string{"h2"}}, Metadata{SNI: "a.example.com", ALPN: []string{"h2"}}, true},
		{"one fails", Protocol{SNI: []string{"*.example.com"}, ALPN: []string{"h2"}}, Metadata{SNI: "a.example.com", ALPN: []string{"http/1.1"}}, false},
		{"empty pattern", Protocol{SNI: []string{""}}, Metadata{SNI: ""}, false},
		{"bare star is not a wildcard", Protocol{SNI: []string{"*"}}, Metadata{SNI: "a"}, false},
	}
	for _, c := range cases {
		if got := c.p.Accepts(c.md); got != c.want {
			t.Errorf("%s: Accepts(%+v) = %v, want %v", c.name, c.md, got, c.want)
		}
	}
}

func BenchmarkAccepts(b *testing.B) {
	p := &Protocol{SNI: []string{"x.example.org", "*.example.com"}, ALPN: []string{"h2"}}
	md := Metadata{SNI: "api.example.com", ALPN: []string{"http/1.1", "h2"}}
	b.ReportAllocs()
	for b.Loop() {
		if !p.Accepts(md) {
			b.Fatal("no match")
		}
	}
}
