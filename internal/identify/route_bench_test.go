package identify

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"runtime"
	"testing"

	"github.com/darkit/protoplex/protocols"
)

// helloConn captures what a TLS client writes first (its ClientHello) and
// fails the handshake there.
type helloConn struct {
	net.Conn
	out []byte
}

func (c *helloConn) Write(p []byte) (int, error) {
	c.out = append(c.out, p...)
	return 0, errors.New("captured")
}

// clientHellos returns n ClientHellos of Go's TLS client for sni, each with
// its own random and key shares, as connections send them.
func clientHellos(tb testing.TB, sni string, n int) [][]byte {
	tb.Helper()
	out := make([][]byte, n)
	for i := range out {
		c := &helloConn{}
		_ = tls.Client(c, &tls.Config{ServerName: sni, NextProtos: []string{"h2", "http/1.1"}}).Handshake()
		if len(c.out) < 100 {
			tb.Fatalf("no ClientHello captured (%d bytes)", len(c.out))
		}
		out[i] = c.out
	}
	return out
}

// sniTable has routes TLS routes, names names each (route r, name j:
// "n<j>.r<r>.example.com"), in file order.
func sniTable(tb testing.TB, routes, names int) *Table {
	tb.Helper()
	tls, _ := protocols.Lookup("tls")
	var specs []RouteSpec
	for r := range routes {
		p := tls("127.0.0.1:1")
		for j := range names {
			p.SNI = append(p.SNI, fmt.Sprintf("n%d.r%d.example.com", j, r))
		}
		specs = append(specs, RouteSpec{Spec: p.Spec(), Conditions: p.Conditions()})
	}
	tb2, err := New(specs, 0, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return tb2
}

// BenchmarkEvaluateSNI: Evaluate on ClientHellos that differ per connection
// (random, key shares), routed by the last name of the last route in file
// order, at 1 to 10,000 routes of one name and at 100,000 names (10
// routes of 10,000).
func BenchmarkEvaluateSNI(b *testing.B) {
	for _, size := range []struct{ routes, names int }{{1, 1}, {100, 1}, {1000, 1}, {10000, 1}, {10, 10000}} {
		b.Run(fmt.Sprintf("routes=%d/names=%d", size.routes, size.routes*size.names), func(b *testing.B) {
			tb := sniTable(b, size.routes, size.names)
			last := tb.Routes()[size.routes-1]
			hellos := clientHellos(b, fmt.Sprintf("n%d.r%d.example.com", size.names-1, size.routes-1), 64)
			if v := tb.Evaluate(hellos[0]); v.Best != last || !v.Final {
				b.Fatalf("routed to %v, want the last route", v.Best)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				tb.Evaluate(hellos[i%len(hellos)])
			}
		})
	}
}

// BenchmarkIndexMemory reports what the table of 100,000 SNI names (10
// routes of 10,000) holds besides the names themselves, per name, and how
// long New takes to build it.
func BenchmarkIndexMemory(b *testing.B) {
	tls, _ := protocols.Lookup("tls")
	const routes, names = 10, 10_000
	var specs []RouteSpec
	for r := range routes {
		p := tls("127.0.0.1:1")
		for j := range names {
			p.SNI = append(p.SNI, fmt.Sprintf("n%d.r%d.example.com", j, r))
		}
		specs = append(specs, RouteSpec{Spec: p.Spec(), Conditions: p.Conditions()})
	}
	var tables []*Table
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for b.Loop() {
		tb, err := New(specs, 0, nil)
		if err != nil {
			b.Fatal(err)
		}
		tables = append(tables, tb)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(len(tables)*routes*names), "heapB/name")
	runtime.KeepAlive(tables)
}
