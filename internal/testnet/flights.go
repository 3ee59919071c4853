package testnet

// The first flights recorded from real clients (protocols/testdata/flights,
// made by protocols/testdata/record.sh): the bytes a client sends before the
// server answers, one file per client, named after the protocol's YAML name
// ("tls-curl.bin"); and the first datagrams of UDP clients
// (protocols/testdata/datagrams, made by record-datagrams.sh and
// record-quic.sh), one file per datagram.

import (
	"os"
	"path/filepath"
	"testing"
)

// FlightsDir returns the directory of the recorded flights.
func FlightsDir(tb testing.TB) string {
	tb.Helper()
	return recordings(tb, "flights")
}

// recordings returns protocols/testdata/kind. Tests run in their package's
// directory, so it is found in the nearest directory above that holds it.
func recordings(tb testing.TB, kind string) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		p := filepath.Join(dir, "protocols", "testdata", kind)
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatalf("protocols/testdata/%s not found above the working directory", kind)
		}
		dir = parent
	}
}

// Flight returns the recorded flight in the file name ("http-curl.bin").
func Flight(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(FlightsDir(tb), name))
	if err != nil {
		tb.Fatalf("flight %s: %v (recreate with protocols/testdata/record.sh)", name, err)
	}
	return b
}

// Flights returns every recorded flight whose file name starts with prefix
// ("http-", "tls-", "" for all), keyed by file name. It fails the test when
// there is none.
func Flights(tb testing.TB, prefix string) map[string][]byte {
	tb.Helper()
	return readAll(tb, FlightsDir(tb), prefix)
}

// Datagrams returns every recorded first datagram whose file name starts
// with prefix ("quic-", "" for all), keyed by file name; a client's several
// datagrams are NAME-1.bin, NAME-2.bin, ...
func Datagrams(tb testing.TB, prefix string) map[string][]byte {
	tb.Helper()
	return readAll(tb, recordings(tb, "datagrams"), prefix)
}

// readAll reads the .bin files of dir starting with prefix; none is a
// failure.
func readAll(tb testing.TB, dir, prefix string) map[string][]byte {
	tb.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, prefix+"*.bin"))
	if err != nil || len(paths) == 0 {
		tb.Fatalf("no recording %s*.bin in %s: %v", prefix, dir, err)
	}
	out := make(map[string][]byte, len(paths))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		out[filepath.Base(p)] = b
	}
	return out
}
