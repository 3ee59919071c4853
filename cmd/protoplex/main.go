// Command protoplex serves several protocols on one port.
//
//	protoplex [-config FILE] [-listen ADDR] [-check] [-version]
package main

import (
	"context"
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

	// With -listen the addresses are pinned; otherwise the manager serves
	// server.listen and rebinds it on reload.
	var pinned []string
	if *listen != "" {
		pinned = listens
	}
	if err := pm.Start(ctx, pinned...); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	for _, a := range pm.Addrs() {
		fmt.Fprintf(stdout, "listening: %s\n", a)
	}
	for _, p := range pm.Protocols() {
		target := p.Target
		if p.Handler != nil {
			target = "(in-process)"
		}
		fmt.Fprintf(stdout, "route:    %-10s -> %s\n", p.Name, target)
	}
	if cm != nil {
		overridden := *listen != ""
		cm.OnConfigChange(func(c *protoplex.Config) {
			if keys := restartOnly(cfg, c, overridden); len(keys) > 0 {
				log.Warn("configuration applied except keys that take effect only at restart", "keys", strings.Join(keys, ","))
			}
		})
	}
	<-ctx.Done()
	log.Info("shutting down: draining connections")
	pm.Wait()
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
