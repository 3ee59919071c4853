//go:build unix

package config

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// unblockFIFO opens path for writing without blocking and closes it, so a
// reader stuck opening it (the defect) returns instead of leaking.
func unblockFIFO(path string) {
	if f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
		f.Close()
	}
}

// TestCheckConfigFileRefusesFIFO: -check on a FIFO (or any file that is not
// a regular one) is an error at once, never an open() waiting for a writer.
func TestCheckConfigFileRefusesFIFO(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "config.yaml")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skip("mkfifo:", err)
	}
	link := filepath.Join(dir, "link.yaml")
	if err := os.Symlink(fifo, link); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, want string }{
		{fifo, fifo + ": not a regular file (a FIFO): refused"},
		{link, link + ": not a regular file (a FIFO): refused"},
		{dir, dir + ": not a regular file (a directory): refused"},
	} {
		done := make(chan error, 1)
		go func() { done <- checkFile(c.path) }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("checkFile(%s): want %q, got %v", c.path, c.want, err)
			}
		case <-time.After(10 * time.Second):
			unblockFIFO(fifo)
			<-done
			t.Fatalf("checkFile(%s) blocked", c.path)
		}
	}
	// A symlink to a regular file (a Kubernetes ConfigMap) is followed.
	real := filepath.Join(dir, "real.yaml")
	writeConfig(t, real, "127.0.0.1:22")
	cm := filepath.Join(dir, "cm.yaml")
	if err := os.Symlink(real, cm); err != nil {
		t.Fatal(err)
	}
	if err := checkFile(cm); err != nil {
		t.Fatalf("symlink to a regular file: %v", err)
	}
}

// TestConfigManagerFIFOSwap: a FIFO renamed over the watched file is
// refused (the old config stays), a valid file after it is applied, and
// Close returns.
func TestConfigManagerFIFOSwap(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	writeConfig(t, path, "127.0.0.1:1001")
	cm, err := Watch(path)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			unblockFIFO(path)
			cm.Close()
		}
	}()
	failed := make(chan error, 10)
	changed := make(chan *Config, 10)
	cm.OnConfigError(func(err error) { failed <- err })
	cm.OnConfigChange(func(c *Config) { changed <- c })

	fifo := filepath.Join(dir, "fifo.tmp")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skip("mkfifo:", err)
	}
	if err := os.Rename(fifo, path); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-failed:
		if !strings.Contains(err.Error(), "not a regular file (a FIFO): refused") {
			t.Fatalf("reload error: %v", err)
		}
	case c := <-changed:
		t.Fatalf("a FIFO was applied: %+v", c.Protocols)
	case <-time.After(10 * time.Second):
		t.Fatal("the FIFO swap was not reported (a reload blocked opening it?)")
	}
	if got := cm.Config().Protocols[0].Target[0]; got != "127.0.0.1:1001" {
		t.Fatalf("config after the FIFO: target %q", got)
	}

	next := filepath.Join(dir, "next.tmp")
	writeConfig(t, next, "127.0.0.1:1002")
	if err := os.Rename(next, path); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for applied := false; !applied; {
		select {
		case c := <-changed:
			applied = c.Protocols[0].Target[0] == "127.0.0.1:1002"
		case <-failed:
		case <-deadline:
			t.Fatal("a valid file after the FIFO was not applied")
		}
	}
	done := make(chan struct{})
	go func() { cm.Close(); close(done) }()
	select {
	case <-done:
		closed = true
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
}
