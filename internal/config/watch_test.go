package config

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

const watchGood = "protocols:\n  - name: SSH\n    target: \"127.0.0.1:22\"\n"

// replace writes data to path as sed -i does: a new file renamed over it.
func replace(t *testing.T, path, data string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "sedXYZ")
	if err := os.WriteFile(tmp, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestOneEditTriedOnce: an edit saved and then signalled (Reload) reaches
// both the watcher and Reload; it is tried once, whichever comes first, so
// a bad edit is rejected once, and Reload returns the error of the try it
// joined. A later Reload of the same bytes, after
// CoalesceWindow, is tried again (a retry), as is a Reload right after a
// Reload; the watcher never re-tries.
func TestOneEditTriedOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	testnet.WriteFile(t, path, watchGood)
	cm, err := Open(path, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cm.Close() })
	var rejected, unchanged atomic.Int64
	cm.OnConfigError(func(error) { rejected.Add(1) })
	cm.OnConfigUnchanged(func() { unchanged.Add(1) })

	replace(t, path, "protocols:\n  - name: SSH\n    target: \"nope\"\n")
	if err := cm.Reload(); err == nil { // tried, or the watcher's try: its error either way
		t.Fatal("Reload of a bad edit returned no error")
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return unchanged.Load() == 1 }, "the watcher's try of the same edit was not skipped")
	if n := rejected.Load(); n != 1 {
		t.Fatalf("one bad edit rejected %d times", n)
	}
	cm.mu.Lock()
	cm.last.at = cm.last.at.Add(-CoalesceWindow) // the edit was tried long ago
	cm.mu.Unlock()
	cm.Reload()
	if n := rejected.Load(); n != 2 {
		t.Fatalf("a SIGHUP after the window was not tried: %d rejections", n)
	}
	cm.Reload() // right after a Reload: a retry (sni_file may have changed)
	if n := rejected.Load(); n != 3 {
		t.Fatalf("a second SIGHUP was not tried: %d rejections", n)
	}
}

// TestOpenWithoutWatch: Open(path, false) loads the file and starts no
// watcher; Reload reads it again; Close is a no-op.
func TestOpenWithoutWatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	testnet.WriteFile(t, path, watchGood)
	cm, err := Open(path, false)
	if err != nil {
		t.Fatal(err)
	}
	if cm.done != nil || cm.cancel != nil {
		t.Fatal("a watcher runs")
	}
	replace(t, path, "protocols:\n  - name: SSH\n    target: \"127.0.0.1:2222\"\n")
	if err := cm.Reload(); err != nil || cm.Config().Protocols[0].Target[0] != "127.0.0.1:2222" {
		t.Fatalf("Reload: %v %v", err, cm.Config().Protocols)
	}
	if err := cm.Close(); err != nil {
		t.Fatal(err)
	}
}
