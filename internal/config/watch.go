package config

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watcher holds the current configuration of a file and reloads it when
// Reload is called (the CLI does on SIGHUP: signals are the program's, not
// the library's) and, when it watches the file, when the file changes
// (fsnotify, robust to editors and Kubernetes ConfigMaps that replace the
// file by rename). A reload that fails validation (an empty or truncated
// file among them: a config needs protocols) or that an OnConfigCheck
// callback refuses is reported, and the previous configuration stays
// current.
//
// One edit is tried once: the watcher does not reload bytes the last
// reload of the file already tried, and a Reload of the bytes the watcher
// tried less than CoalesceWindow ago is that try (a `sed -i` followed by
// SIGHUP reaches both the watcher and Reload). Both are reported to
// OnConfigUnchanged instead. Two Reloads are always two tries: a SIGHUP
// also re-reads the files the configuration names (sni_file).
//
// Watching starts in Watch, so NewConfigManager followed by OnConfigChange
// reloads automatically; Close stops it.
type Watcher struct {
	path    string
	current atomic.Pointer[Config]

	mu          sync.Mutex // guards callbacks and the last try, serialises reloads
	onCheck     []func(*Config) error
	onChange    []func(*Config)
	onError     []func(error)
	onUnchanged []func()
	last        *fileTry // the last reload of the file, nil when the config came from elsewhere

	reloads, failures atomic.Int64

	cancel context.CancelFunc
	done   chan struct{}
}

// CoalesceWindow is how long after the watcher's reload of the file a
// Reload of the same bytes is taken as that reload.
const CoalesceWindow = 2 * time.Second

// Watch loads path (an error names file:line) and starts watching it.
func Watch(path string) (*Watcher, error) { return Open(path, true) }

// Open loads path (an error names file:line); with watch it starts
// watching the file, without it the file is read again only by Reload.
func Open(path string, watch bool) (*Watcher, error) {
	cfg, err := Load(path)
	if err != nil {
		return nil, err
	}
	if !watch {
		cm := &Watcher{path: path}
		cm.current.Store(cfg)
		return cm, nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	// The directory, not the file: a rename-replace gives the file a new
	// inode, which a watch on the old one would never see.
	if err := w.Add(filepath.Dir(path)); err != nil {
		w.Close()
		return nil, err
	}
	cm := &Watcher{path: path, done: make(chan struct{})}
	cm.current.Store(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	cm.cancel = cancel
	go cm.watch(ctx, w)
	return cm, nil
}

// Config returns the current configuration.
func (cm *Watcher) Config() *Config { return cm.current.Load() }

// OnConfigChange registers fn to run after each successful reload.
func (cm *Watcher) OnConfigChange(fn func(*Config)) {
	cm.mu.Lock()
	cm.onChange = append(cm.onChange, fn)
	cm.mu.Unlock()
}

// OnConfigCheck registers fn to vet each reloaded configuration before it
// becomes current: when any fn returns an error the reload is rejected like
// an invalid file (OnConfigError callbacks run, Config keeps the previous
// one, no OnConfigChange callback runs). A manager from
// NewProtocolManagerWithConfig registers its CheckConfig here, so a reload
// it would refuse never becomes current for the other callbacks either.
func (cm *Watcher) OnConfigCheck(fn func(*Config) error) {
	cm.mu.Lock()
	cm.onCheck = append(cm.onCheck, fn)
	cm.mu.Unlock()
}

// OnConfigError registers fn to run when a reload is rejected.
func (cm *Watcher) OnConfigError(fn func(error)) {
	cm.mu.Lock()
	cm.onError = append(cm.onError, fn)
	cm.mu.Unlock()
}

// OnConfigUnchanged registers fn to run when a reload is not tried because
// the file holds the bytes the last one tried (see Watcher).
func (cm *Watcher) OnConfigUnchanged(fn func()) {
	cm.mu.Lock()
	cm.onUnchanged = append(cm.onUnchanged, fn)
	cm.mu.Unlock()
}

// Reloads and ReloadFailures count reload attempts' outcomes.
func (cm *Watcher) Reloads() int64        { return cm.reloads.Load() }
func (cm *Watcher) ReloadFailures() int64 { return cm.failures.Load() }

// Reload reads the file again now, unless it holds the bytes the watcher
// tried less than CoalesceWindow ago: then that try's result is returned,
// and no callback runs again but OnConfigUnchanged's.
func (cm *Watcher) Reload() error { return cm.reload(false) }

// reload reads the file and applies it, unless it is unchanged: since the
// last try for the watcher (watched), since the watcher's try within
// CoalesceWindow for Reload.
func (cm *Watcher) reload(watched bool) error {
	data, err := readFile(cm.path)
	if err != nil {
		return cm.apply(nil, err)
	}
	now := time.Now()
	cm.mu.Lock()
	if t := cm.last; t != nil && bytes.Equal(data, t.data) && (watched || t.watched && now.Sub(t.at) < CoalesceWindow) {
		fns := cm.onUnchanged
		cm.mu.Unlock()
		for _, fn := range fns {
			fn()
		}
		// That try may still be running (its error callbacks have run,
		// its result is not kept yet): its result is this one's.
		<-t.done
		return t.err
	}
	t := &fileTry{data: data, at: now, watched: watched, done: make(chan struct{})}
	cm.last = t
	cm.mu.Unlock()
	cfg, err := Parse(data, cm.path)
	t.err = cm.apply(cfg, err)
	close(t.done)
	return t.err
}

// fileTry is one reload of the file: its bytes, when and by whom it was
// tried, and its result (err is set before done is closed).
type fileTry struct {
	data    []byte
	at      time.Time
	watched bool
	err     error
	done    chan struct{}
}

// forgetFile makes the next reload of the file a real one: the current
// configuration came from elsewhere.
func (cm *Watcher) forgetFile() {
	cm.mu.Lock()
	cm.last = nil
	cm.mu.Unlock()
}

// ApplyYAML validates data and, if valid, makes it the current configuration.
func (cm *Watcher) ApplyYAML(data []byte, source string) error {
	cm.forgetFile()
	cfg, err := Parse(data, source)
	return cm.apply(cfg, err)
}

// Apply validates cfg (built in Go or read from elsewhere, etcd among them)
// and, if it and every OnConfigCheck accept it, makes it current like a
// reload of the file.
func (cm *Watcher) Apply(cfg *Config) error {
	cm.forgetFile()
	if cfg == nil {
		return cm.apply(nil, errors.New("protoplex: Apply(nil)"))
	}
	return cm.apply(cfg, cfg.Validate())
}

func (cm *Watcher) apply(cfg *Config, err error) error {
	cm.mu.Lock()
	defer cm.mu.Unlock()
	if err == nil {
		var errs []error
		for _, fn := range cm.onCheck {
			if e := fn(cfg); e != nil {
				errs = append(errs, e)
			}
		}
		err = errors.Join(errs...)
	}
	if err != nil {
		cm.failures.Add(1)
		for _, fn := range cm.onError {
			fn(err)
		}
		return err
	}
	cm.reloads.Add(1)
	cm.current.Store(cfg)
	for _, fn := range cm.onChange {
		fn(cfg)
	}
	return nil
}

func (cm *Watcher) watch(ctx context.Context, w *fsnotify.Watcher) {
	defer close(cm.done)
	defer w.Close()
	name := filepath.Clean(cm.path)
	// Editors write in bursts (truncate, write, chmod, rename): reload once
	// the burst is over.
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	for {
		select {
		case <-ctx.Done():
			debounce.Stop()
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if filepath.Clean(ev.Name) == name || filepath.Base(ev.Name) == "..data" {
				debounce.Reset(100 * time.Millisecond)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			cm.apply(nil, errors.New("protoplex: watching "+cm.path+": "+err.Error()))
		case <-debounce.C:
			if _, err := os.Stat(cm.path); err == nil {
				cm.reload(true)
			}
		}
	}
}

// Close stops watching.
func (cm *Watcher) Close() error {
	if cm.cancel == nil {
		return nil // not watching
	}
	cm.cancel()
	<-cm.done
	return nil
}
