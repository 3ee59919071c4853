// Command protoplex serves several protocols on one port.
//
//	protoplex [-config FILE] [-listen ADDR] [-check] [-version]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/darkit/protoplex"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "register", "deregister", "nodes", "services":
			return operator(args[0], args[1:], stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("protoplex", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "YAML configuration `file` (default: embedded config, listen 127.0.0.1:9090)")
	listen := fs.String("listen", "", "listen `address`, overrides server.listen")
	check := fs.Bool("check", false, "validate the configuration, print ok or the errors, and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, "protoplex", version)
		return 0
	}
	if *check {
		if *configPath == "" {
			fmt.Fprintln(stderr, "protoplex: -check needs -config FILE")
			return 2
		}
		if err := protoplex.CheckConfigFile(*configPath); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		fmt.Fprintln(stdout, "ok")
		return 0
	}

	var cm *protoplex.ConfigManager
	var cfg *protoplex.Config
	if *configPath != "" {
		var err error
		cm, err = protoplex.NewConfigManager(*configPath)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer cm.Close()
		cfg = cm.Config()
	} else {
		cfg = protoplex.DefaultConfig()
	}
	log := newLogger(cfg, stderr)
	listens := []string(cfg.Server.Listen)
	if *listen != "" {
		listens = []string{*listen}
	}

	var pm *protoplex.ProtocolManager
	if cfg.Distributed.Enable {
		// The environment names this node (PROTOPLEX_NODE_ID, ETCD_ENDPOINTS);
		// the distributed block applies at start only, so the file's own
		// values stay what reloads compare against.
		node := *cfg
		if err := node.ApplyEnv(os.Getenv); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		dc := protoplex.DistributedConfigFrom(&node)
		dc.Options = []protoplex.Option{protoplex.WithLogger(log)}
		dm, err := protoplex.NewDistributedManager(dc)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer dm.Close()
		pm = dm.Manager()
		if cm != nil {
			// A reload the node refuses stays out of cm too, so the
			// listeners are never rebound to a rejected file's addresses.
			cm.OnConfigCheck(dm.CheckConfig)
			cm.OnConfigError(func(err error) {
				log.Error("configuration rejected, the running configuration keeps serving", "err", err)
			})
			cm.OnConfigChange(func(c *protoplex.Config) {
				if err := dm.UpdateConfig(c); err != nil {
					log.Error("configuration rejected, the running configuration keeps serving", "err", err)
				}
			})
		}
		fmt.Fprintf(stdout, "cluster:  node %s, etcd %s, %d services discovered\n", dc.NodeID, strings.Join(dc.EtcdEndpoints, ","), dm.GetServiceCount())
	} else if cm != nil {
		pm = protoplex.NewProtocolManagerWithConfig(cm, protoplex.WithLogger(log))
	} else {
		pm = protoplex.NewProtocolManager(protoplex.WithLogger(log))
		if pm.Err() == nil {
			if err := pm.UpdateConfig(cfg); err != nil {
				fmt.Fprintln(stderr, err)
				return 1
			}
		}
	}
	if err := pm.Err(); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer pm.Close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if cm != nil {
		reloadOnHangup(ctx, cm)
	}

	mon := cfg.Monitoring
	if mon.MetricsPort > 0 {
		if err := pm.ServeMetrics(net.JoinHostPort(mon.BindAddress, fmt.Sprint(mon.MetricsPort))); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		fmt.Fprintf(stdout, "metrics:  http://%s/metrics\n", pm.MetricsAddr())
	}
	if mon.HealthCheckPort > 0 {
		addr, err := pm.ServeHealth(net.JoinHostPort(mon.BindAddress, fmt.Sprint(mon.HealthCheckPort)))
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		fmt.Fprintf(stdout, "health:   http://%s/health/live, /health/ready\n", addr)
	}

	lns, err := listenAll(listens)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	for _, ln := range lns {
		fmt.Fprintf(stdout, "listening: %s\n", ln.Addr())
	}
	for _, p := range pm.Protocols() {
		target := p.Target
		if p.Handler != nil {
			target = "(in-process)"
		}
		fmt.Fprintf(stdout, "route:    %-10s -> %s\n", p.Name, target)
	}

	srv := &servers{pm: pm, ctx: ctx, log: log}
	srv.start(listens, lns)
	if cm != nil {
		if *listen == "" {
			// A reload binds its new listen addresses while it is checked:
			// one that cannot be bound rejects the whole reload, so routes
			// never change without the listeners they came with. New
			// listeners start before old ones stop, so established
			// connections are never dropped.
			cm.OnConfigCheck(func(c *protoplex.Config) error { return srv.prepare(c.Server.Listen) })
			cm.OnConfigError(func(error) { srv.release() })
			cm.OnConfigChange(func(c *protoplex.Config) { srv.rebind(c.Server.Listen) })
		}
		overridden := *listen != ""
		cm.OnConfigChange(func(c *protoplex.Config) {
			if keys := restartOnly(cfg, c, overridden); len(keys) > 0 {
				log.Warn("configuration applied except keys that take effect only at restart", "keys", strings.Join(keys, ","))
			}
		})
	}
	<-ctx.Done()
	log.Info("shutting down: draining connections")
	srv.wait()
	return 0
}

// reloadOnHangup reloads cm's file on each SIGHUP until ctx ends.
func reloadOnHangup(ctx context.Context, cm *protoplex.ConfigManager) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-hup:
				_ = cm.Reload() // a rejected reload is logged by OnConfigError
			case <-ctx.Done():
				return
			}
		}
	}()
}

func newLogger(cfg *protoplex.Config, w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	_ = level.UnmarshalText([]byte(cfg.Server.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if strings.EqualFold(cfg.Server.LogFormat, "json") {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func listenAll(addrs []string) ([]net.Listener, error) {
	var lns []net.Listener
	for _, a := range addrs {
		ln, err := protoplex.Listen(context.Background(), a)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, err
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// restartOnly names the keys of next that differ from started (the
// configuration the process started with) and that a reload does not apply:
// the monitoring ports, logging, the distributed block, and server.listen
// when -listen overrides it.
func restartOnly(started, next *protoplex.Config, listenOverridden bool) []string {
	var keys []string
	diff := func(key string, changed bool) {
		if changed {
			keys = append(keys, key)
		}
	}
	a, b := started.Monitoring, next.Monitoring
	diff("monitoring.enable_metrics", a.EnableMetrics != b.EnableMetrics)
	diff("monitoring.metrics_port", a.MetricsPort != b.MetricsPort)
	diff("monitoring.enable_health_check", a.EnableHealthCheck != b.EnableHealthCheck)
	diff("monitoring.health_check_port", a.HealthCheckPort != b.HealthCheckPort)
	diff("monitoring.bind_address", a.BindAddress != b.BindAddress)
	diff("server.log_format", !strings.EqualFold(started.Server.LogFormat, next.Server.LogFormat))
	diff("server.log_level", !strings.EqualFold(started.Server.LogLevel, next.Server.LogLevel))
	diff("distributed", !reflect.DeepEqual(started.Distributed, next.Distributed))
	diff("server.listen (-listen overrides it)", listenOverridden && !slices.Equal(started.Server.Listen, next.Server.Listen))
	return keys
}

// servers runs one Serve per listen address and rebinds on config changes.
type servers struct {
	pm  *protoplex.ProtocolManager
	ctx context.Context
	log *slog.Logger

	mu      sync.Mutex
	running map[string]context.CancelCauseFunc
	pending map[string]net.Listener // bound by prepare, for the next rebind
	wg      sync.WaitGroup
}

// prepare binds the addresses of addrs not served yet and keeps them for
// rebind; an address that cannot be bound is an error and nothing stays
// bound. Listeners an earlier prepare left (a reload rejected after it) are
// released first.
func (s *servers) prepare(addrs []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseLocked()
	var add []string
	for _, a := range addrs {
		if _, ok := s.running[a]; !ok {
			add = append(add, a)
		}
	}
	lns, err := listenAll(add)
	if err != nil {
		return fmt.Errorf("server.listen: %w", err)
	}
	s.pending = map[string]net.Listener{}
	for i, a := range add {
		s.pending[a] = lns[i]
	}
	return nil
}

// release closes the listeners prepare bound for a reload that was rejected.
func (s *servers) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseLocked()
}

func (s *servers) releaseLocked() {
	for _, ln := range s.pending {
		ln.Close()
	}
	s.pending = nil
}

// start serves lns[i], configured as addrs[i].
func (s *servers) start(addrs []string, lns []net.Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running == nil {
		s.running = map[string]context.CancelCauseFunc{}
	}
	for i, ln := range lns {
		ctx, cancel := context.WithCancelCause(s.ctx)
		s.running[addrs[i]] = cancel
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.pm.Serve(ctx, ln); err != nil && !errors.Is(err, protoplex.ErrClosed) {
				s.log.Error("serve", "addr", ln.Addr().String(), "err", err)
			}
		}()
	}
}

// rebind starts listeners for new addresses before stopping removed ones,
// so established connections are never dropped (Serve does not drain on
// ErrListenerRemoved).
func (s *servers) rebind(addrs []string) {
	s.mu.Lock()
	var add, unbound []string
	var lns []net.Listener
	for _, a := range addrs {
		if _, ok := s.running[a]; ok {
			continue
		}
		if ln, ok := s.pending[a]; ok {
			add, lns = append(add, a), append(lns, ln)
			delete(s.pending, a)
		} else {
			unbound = append(unbound, a)
		}
	}
	s.releaseLocked()
	s.mu.Unlock()
	// Every address was bound by prepare, unless the change came without
	// a check.
	more, err := listenAll(unbound)
	if err != nil {
		for _, ln := range lns {
			ln.Close()
		}
		s.log.Error("rebind failed, keeping current listeners", "err", err)
		return
	}
	s.start(append(add, unbound...), append(lns, more...))
	s.mu.Lock()
	defer s.mu.Unlock()
	for a, cancel := range s.running {
		if !slices.Contains(addrs, a) {
			s.log.Info("listener removed by configuration", "addr", a)
			cancel(protoplex.ErrListenerRemoved)
			delete(s.running, a)
		}
	}
}

func (s *servers) wait() { s.wg.Wait() }
