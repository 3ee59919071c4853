package testnet

import (
	"os"
	"testing"
)

// WriteFile writes data to path (mode 0644) or fails the test.
func WriteFile(tb testing.TB, path, data string) {
	tb.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		tb.Fatal(err)
	}
}
