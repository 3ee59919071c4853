package testnet

// The first flights recorded from real clients (protocols/testdata/flights,
// made by protocols/testdata/record.sh): the bytes a client sends before the
// server answers, one file per client, named after the protocol's YAML name
// ("tls-curl.bin").

import (
	"os"
	"path/filepath"
	"testing"
)

// FlightsDir returns the directory of the recorded flights. Tests run in their
// package's directory, so it is found in the nearest directory above that
// holds protocols/testdata/flights.
func FlightsDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		p := filepath.Join(dir, "protocols", "testdata", "flights")
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("protocols/testdata/flights not found above the working directory")
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
	paths, err := filepath.Glob(filepath.Join(FlightsDir(tb), prefix+"*.bin"))
	if err != nil || len(paths) == 0 {
		tb.Fatalf("no recorded flight %s*.bin: %v", prefix, err)
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
