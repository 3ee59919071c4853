// Command protoplex serves several protocols on one port.
//
//	protoplex [-config FILE] [-listen ADDR] [-watch] [-check] [-version] [-upgrade PID]
//	protoplex -from-sslh FILE [-from-sslh-args 'SSLH OPTIONS']
//	protoplex register|deregister|nodes|services -etcd HOSTS [flags]
//	protoplex status|target|unban [args] [-url URL | -config FILE]
//
// docs/cli.md is the complete reference: flags, sub-commands, signals,
// exit codes, environment and the lines printed on stdout.
package main

import (
	"context"
	"encoding/json"
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
	"github.com/darkit/protoplex/internal/logging"
	"github.com/darkit/protoplex/internal/routing"
)

// version, when set at build time with -ldflags "-X main.version=...",
// replaces the module version of the build info in -version.
var version string

// Exit codes: 0 success, 1 a failure at run time (configuration, bind,
// etcd), 2 a usage error.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "register", "deregister", "nodes", "services":
			return operator(args[0], args[1:], stdout, stderr)
		case "status", "target", "unban":
			return statusCommand(args[0], args[1:], stdout, stderr)
		}
	}
	fs := newFlagSet("protoplex", usage)
	configPath := fs.String("config", "", "YAML configuration `file` (default: the embedded configuration, loopback only: data 127.0.0.1:9090, metrics 127.0.0.1:9091, health 127.0.0.1:9092)")
	listen := fs.String("listen", "", "listen `address`, overrides server.listen (not with socket activation)")
	check := fs.Bool("check", false, "validate the -config file, print ok or every error as file:line, and exit")
	watch := fs.Bool("watch", false, "also reload the -config file each time it is saved (debounced); by default only SIGHUP reloads it")
	showVersion := fs.Bool("version", false, "print the version (module version, VCS revision and time) and exit")
	upgradePID := fs.Int("upgrade", 0, "ask the protoplex process `pid` to hand its listeners to a new process of its binary (SIGUSR2) and wait until it has exited")
	sslh := fromSSLHFlags(fs)
	if code, ok := parse(fs, args, stdout, stderr); !ok {
		return code
	}
	if *showVersion {
		fmt.Fprintln(stdout, versionLine())
		return exitOK
	}
	if *upgradePID != 0 {
		return upgradeCommand(*upgradePID, upgradeWait, stdout, stderr)
	}
	if code, done := sslh.run(os.Stdin, stdout, stderr); done {
		return code
	}
	if *check {
		if *configPath == "" {
			fmt.Fprintln(stderr, "protoplex: -check needs -config FILE")
			return exitUsage
		}
		if err := protoplex.CheckConfigFile(*configPath); err != nil {
			fmt.Fprintln(stderr, err)
			return exitFail
		}
		fmt.Fprintln(stdout, "ok")
		return exitOK
	}
	usr2 := catchUpgrade()
	up, err := takeUpgrade() // started by an upgrade: the old process's sockets
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitFail
	}
	defer up.abandon("it stopped before it was ready (its log says why)")
	inherited, err := activationListeners()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitFail
	}
	inherited.streams = append(inherited.streams, up.listeners()...)
	defer inherited.close() // those Serve and StartUDP have not taken, on an early return
	if inherited.passed() && *listen != "" {
		fmt.Fprintln(stderr, "protoplex: -listen cannot be combined with socket activation (LISTEN_FDS)")
		return exitUsage
	}
	if *watch && *configPath == "" {
		fmt.Fprintln(stderr, "protoplex: -watch needs -config FILE")
		return exitUsage
	}

	var cm *protoplex.ConfigManager
	var cfg *protoplex.Config
	if *configPath != "" {
		var err error
		cm, err = protoplex.OpenConfigManager(*configPath, *watch)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return exitFail
		}
		defer cm.Close()
		cfg = cm.Config()
	} else {
		cfg = protoplex.DefaultConfig()
	}
	logs := logging.NewSwitch(stderr, cfg.Server.LogFormat, cfg.Server.LogLevel)
	log := slog.New(logs)
	out := banner{w: stdout, json: logs.JSON()}
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
			return exitFail
		}
		dc := protoplex.DistributedConfigFrom(&node)
		dc.Options = append([]protoplex.Option{protoplex.WithLogger(log)}, up.options()...)
		dm, err := protoplex.NewDistributedManager(dc)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return exitFail
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
		out.say(fmt.Sprintf("cluster:  node %s, etcd %s, %d services discovered", dc.NodeID, strings.Join(dc.EtcdEndpoints, ","), dm.GetServiceCount()),
			"cluster", "node", dc.NodeID, "etcd", dc.EtcdEndpoints, "services", dm.GetServiceCount())
	} else if cm != nil {
		pm = protoplex.NewProtocolManagerWithConfig(cm, append([]protoplex.Option{protoplex.WithLogger(log)}, up.options()...)...)
	} else {
		pm = protoplex.NewProtocolManager(append([]protoplex.Option{protoplex.WithLogger(log)}, up.options()...)...)
		if pm.Err() == nil {
			if err := pm.UpdateConfig(cfg); err != nil {
				fmt.Fprintln(stderr, err)
				return exitFail
			}
		}
	}
	if err := pm.Err(); err != nil {
		fmt.Fprintln(stderr, err)
		return exitFail
	}
	defer pm.Close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	reloadOnHangup(ctx, cm, log)
	if cm != nil {
		cm.OnConfigUnchanged(func() {
			log.Debug("configuration file unchanged since the reload just tried, not tried again", "file", *configPath)
		})
	}

	if err := enableAdmin(pm, *cfg, os.Getenv); err != nil {
		fmt.Fprintln(stderr, err)
		return exitFail
	}
	mon := cfg.Monitoring
	if mon.MetricsPort > 0 {
		if err := pm.ServeMetrics(net.JoinHostPort(mon.BindAddress, fmt.Sprint(mon.MetricsPort))); err != nil {
			fmt.Fprintln(stderr, err)
			return exitFail
		}
		out.say("metrics:  http://"+pm.MetricsAddr()+"/metrics", "metrics", "url", "http://"+pm.MetricsAddr()+"/metrics")
	}
	if mon.HealthCheckPort > 0 {
		addr, err := pm.ServeHealth(net.JoinHostPort(mon.BindAddress, fmt.Sprint(mon.HealthCheckPort)))
		if err != nil {
			fmt.Fprintln(stderr, err)
			return exitFail
		}
		out.say("health:   http://"+addr+"/health/live, /health/ready", "health", "live", "http://"+addr+"/health/live", "ready", "http://"+addr+"/health/ready")
	}

	// With -listen the addresses are pinned; with socket activation the
	// inherited stream sockets are served as they are, never rebound;
	// otherwise the manager serves server.listen and rebinds it on reload.
	// server.listen_udp is served in every case and rebound on reload; an
	// inherited UDP socket serves the entry with its address.
	activated := map[string]bool{}
	for _, pc := range inherited.datagrams {
		activated[pc.LocalAddr().String()] = true
	}
	if err := pm.StartUDP(ctx, inherited.datagrams...); err != nil {
		inherited.datagrams = nil // closed by StartUDP
		fmt.Fprintln(stderr, err)
		return exitFail
	}
	inherited.datagrams = nil
	wait := pm.Wait
	pinnedBy := ""
	var served []net.Listener // served as given: an upgrade hands them over too
	switch {
	case len(inherited.streams) > 0:
		pinnedBy = "socket activation"
		served = inherited.streams
		var wg sync.WaitGroup
		for _, ln := range inherited.streams {
			out.say(fmt.Sprintf("listening: %s (socket activation)", ln.Addr()), "listening", "addr", ln.Addr().String(), "socket_activation", true)
			wg.Go(func() {
				if err := pm.Serve(ctx, ln); err != nil {
					log.Error("serving an inherited socket", "addr", ln.Addr().String(), "err", err)
				}
			})
		}
		inherited.streams = nil // Serve closes them
		wait = func() { wg.Wait(); pm.Wait() }
	default:
		var pinned []string
		if *listen != "" {
			pinnedBy = "-listen overrides it"
			pinned = listens
		}
		if err := pm.Start(ctx, pinned...); err != nil {
			fmt.Fprintln(stderr, err)
			return exitFail
		}
	}
	for _, a := range pm.Addrs() {
		if a.Network() != "udp" {
			out.say("listening: "+a.String(), "listening", "addr", a.String())
			continue
		}
		// listen_udp: a tool waiting for "listening: " wants a stream port.
		if activated[a.String()] {
			out.say(fmt.Sprintf("listening (udp): %s (socket activation)", a), "listening", "addr", a.String(), "transport", "udp", "socket_activation", true)
		} else {
			out.say("listening (udp): "+a.String(), "listening", "addr", a.String(), "transport", "udp")
		}
	}
	for _, p := range pm.Protocols() {
		target := p.Target
		if p.Handler != nil {
			target = "(in-process)"
		}
		route := routing.Label(p) // as the access log and the metrics name it
		out.say(fmt.Sprintf("route:    %-10s -> %s", route, target), "route", "protocol", p.Name, "route", route, "target", target)
	}
	if cm != nil {
		cm.OnConfigChange(func(c *protoplex.Config) {
			logs.Set(c.Server.LogFormat, c.Server.LogLevel)
			if keys := restartOnly(cfg, c, pinnedBy); len(keys) > 0 {
				log.Warn("configuration applied except keys that take effect only at restart", "keys", strings.Join(keys, ","))
			}
		})
	}
	up.ready(pm, log)
	upgraded := upgradeOnSignal(ctx, usr2, stop, pm, log, served)
	<-ctx.Done()
	log.Info("shutting down: draining connections")
	wait()
	upgraded.exiting()
	return exitOK
}

// reloadOnHangup reloads cm's file on each SIGHUP until ctx ends. Without
// a file (cm nil) it logs that there is nothing to reload: SIGHUP's default
// action would end the process.
func reloadOnHangup(ctx context.Context, cm *protoplex.ConfigManager, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-hup:
				if cm == nil {
					log.Warn("SIGHUP ignored: the embedded configuration runs, no -config file to reload")
					continue
				}
				_ = cm.Reload() // a rejected reload is logged by OnConfigError
			case <-ctx.Done():
				return
			}
		}
	}()
}

// banner prints what the process serves on stdout: "kind: value" lines, or
// one JSON object per line (with a "banner" key naming the kind) when the
// logs are JSON, so a JSON log pipeline can read both.
type banner struct {
	w    io.Writer
	json bool
}

// say prints text, or kind and the key/value pairs of fields as JSON.
func (b banner) say(text, kind string, fields ...any) {
	if !b.json {
		fmt.Fprintln(b.w, text)
		return
	}
	m := map[string]any{"banner": kind}
	for i := 0; i+1 < len(fields); i += 2 {
		m[fields[i].(string)] = fields[i+1]
	}
	line, _ := json.Marshal(m) // strings, numbers and bools only
	fmt.Fprintf(b.w, "%s\n", line)
}

// restartOnly names the keys of next that differ from started (the
// configuration the process started with) and that a reload does not apply:
// the monitoring ports, the distributed block, the data plane and its loop
// count (the loops own the listeners and connections they serve), and
// server.listen when pinnedBy (-listen, socket activation) says what serves
// instead. server.listen_udp is rebound on reload in every case.
func restartOnly(started, next *protoplex.Config, pinnedBy string) []string {
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
	diff("monitoring.admin", a.Admin != b.Admin || a.AdminTokenFile != b.AdminTokenFile)
	diff("distributed", !reflect.DeepEqual(started.Distributed, next.Distributed))
	diff("server.listen ("+pinnedBy+")", pinnedBy != "" && !slices.Equal(started.Server.Listen, next.Server.Listen))
	diff("server.data_plane", started.Server.DataPlane != next.Server.DataPlane)
	diff("server.event_loops", started.Server.EventLoops != next.Server.EventLoops)
	return keys
}
