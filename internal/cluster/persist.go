package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// saved is the state file: the last good shared configuration and the
// discovered backends, so that a node started while etcd is unreachable
// serves what the cluster last said instead of exiting. Bans and the
// membership are not kept: both end with their leases.
type saved struct {
	Version   int       `json:"version"`
	Saved     time.Time `json:"saved"`
	ConfigKey string    `json:"config_key,omitempty"`
	Config    string    `json:"config,omitempty"`
	ConfigRev int64     `json:"config_rev,omitempty"`
	Services  []Service `json:"services"`
}

const stateVersion = 1

// saveState writes the state file atomically (a temporary file in the same
// directory, synced, then renamed over the old one), so a crash leaves the
// old state or the new one, never a torn one. A failure is logged: the
// node serves on, without a fresher fallback.
func (n *Node) saveState() {
	if n.opt.StateFile == "" {
		return
	}
	n.mu.Lock()
	sv := saved{Version: stateVersion, Saved: time.Now().UTC(), ConfigKey: n.st.configKey, Config: string(n.st.config), ConfigRev: n.st.configRev}
	for _, m := range n.st.services {
		for _, s := range m {
			sv.Services = append(sv.Services, s)
		}
	}
	n.mu.Unlock()
	if err := writeAtomic(n.opt.StateFile, sv); err != nil {
		n.log.Warn("could not save the cluster state", "state_file", n.opt.StateFile, "err", err)
	}
}

func writeAtomic(path string, sv saved) error {
	b, err := json.Marshal(sv)
	if err != nil {
		return err
	}
	if len(b) > MaxStateBytes {
		return fmt.Errorf("%d bytes, over %d", len(b), MaxStateBytes)
	}
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// loadState reads a state file of at most MaxStateBytes.
func loadState(path string) (saved, error) {
	var sv saved
	if path == "" {
		return sv, errors.New("no state file configured")
	}
	f, err := os.Open(path)
	if err != nil {
		return sv, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxStateBytes+1))
	if err != nil {
		return sv, err
	}
	if len(b) > MaxStateBytes {
		return sv, fmt.Errorf("%s: over %d bytes", path, MaxStateBytes)
	}
	if err := json.Unmarshal(b, &sv); err != nil {
		return sv, fmt.Errorf("%s: %w", path, err)
	}
	if sv.Version != stateVersion {
		return sv, fmt.Errorf("%s: version %d, want %d", path, sv.Version, stateVersion)
	}
	return sv, nil
}

// restore makes the saved state the node's, through the reducer like any
// read, and hands it to the handlers. The next session reads everything.
func (n *Node) restore(sv saved) {
	var evs []event
	for _, s := range sv.Services {
		v, _ := json.Marshal(s)
		evs = append(evs, event{Key: ServicesPrefix + s.Protocol + "/" + s.Instance, Value: v})
	}
	if sv.Config != "" && sv.ConfigKey == n.opt.ConfigKey && n.opt.ConfigKey != "" {
		evs = append(evs, event{Key: sv.ConfigKey, Value: []byte(sv.Config), ModRev: sv.ConfigRev})
	}
	n.mu.Lock()
	c := n.st.replace(evs)
	n.mu.Unlock()
	n.savedAt = sv.Saved
	n.needSnapshot = true
	n.perform(context.Background(), c, false)
}
