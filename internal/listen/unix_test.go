//go:build unix

package listen

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnixStaleAndLive: a socket file nobody accepts on is replaced; a live
// listener's socket and a file that is not a socket are left alone and the
// bind fails. The listener's file has UnixMode and goes with Close.
func TestUnixStaleAndLive(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "p.sock")
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close() // as a process that was killed leaves it

	ln, err := Unix(context.Background(), path)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != UnixMode {
		t.Fatalf("mode %v %v, want %v", fi.Mode(), err, UnixMode)
	}
	if _, err := Unix(context.Background(), path); err == nil || !strings.Contains(err.Error(), "another process listens") {
		t.Fatalf("second bind of a live socket: %v", err)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("live listener lost its socket: %v", err)
	}
	c.Close()
	ln.Close()
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket file left after Close: %v", err)
	}

	plain := filepath.Join(dir, "data")
	if err := os.WriteFile(plain, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Unix(context.Background(), plain); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("bind over a regular file: %v", err)
	}
	if b, err := os.ReadFile(plain); err != nil || string(b) != "keep" {
		t.Fatalf("regular file touched: %q %v", b, err)
	}
}

// TestSetServesUnix: a Set serves "unix:" addresses beside TCP ones and
// removes the socket when a reload drops it.
func TestSetServesUnix(t *testing.T) {
	r := &recorder{ended: map[string]error{}}
	s := NewSet(r.serve, func(a string, err error) { t.Errorf("%s: %v", a, err) })
	ctx, cancel := context.WithCancel(context.Background())
	path := filepath.Join(t.TempDir(), "p.sock")
	tcp := freeAddr(t)
	if err := s.Start(ctx, []string{UnixPrefix + path, tcp}); err != nil {
		t.Fatal(err)
	}
	if got := s.Addrs(); len(got) != 2 || got[0].Network() != "unix" || got[0].String() != path {
		t.Fatalf("serving %v", got)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	s.Commit([]string{tcp})
	cancel()
	s.Wait()
	if !errors.Is(r.ended[path], ErrRemoved) {
		t.Fatalf("unix loop ended with %v", r.ended[path])
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket file left after the reload removed it: %v", err)
	}
}
