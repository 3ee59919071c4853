package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/darkit/protoplex"
	"github.com/darkit/protoplex/internal/metrics"
	"github.com/darkit/protoplex/internal/status"
)

// The status sub-commands talk to a running protoplex through its metrics
// port's HTTP API (docs/cli.md, docs/status.md):
//
//	protoplex status [-json] [-problems] [-url URL | -config FILE]
//	protoplex target drain|maint|ready ROUTE TARGET [-url URL | -config FILE] [-token-file FILE]
//	protoplex unban ADDR [-url URL | -config FILE] [-token-file FILE]

// tokenEnv is the environment variable that carries the admin token when
// no file is named.
const tokenEnv = "PROTOPLEX_ADMIN_TOKEN"

// maxStatusBody bounds what the CLI reads of a reply.
const maxStatusBody = 32 << 20

// statusCommands are the sub-commands of this file, in the order -h lists them.
var statusCommands = []struct{ name, args, help string }{
	{"status", "[-json] [-problems]", "print the routes, targets, bans and totals of the running process"},
	{"target", "drain|maint|ready ROUTE TARGET", "hold a target out of new connections (drain, maint) or release it (ready)"},
	{"unban", "ADDR", "lift a source's ban"},
}

// enableAdmin turns the status page's actions on when monitoring.admin
// says so, with the token of monitoring.admin_token_file, else of
// $PROTOPLEX_ADMIN_TOKEN; admin without a token is an error.
func enableAdmin(pm *protoplex.ProtocolManager, mon protoplex.Config, getenv func(string) string) error {
	if !mon.Monitoring.Admin {
		return nil
	}
	token, err := readToken(mon.Monitoring.AdminTokenFile, getenv)
	if err != nil {
		return err
	}
	if len(token) == 0 {
		return errors.New("protoplex: monitoring.admin is true but no token: set monitoring.admin_token_file or " + tokenEnv)
	}
	return pm.EnableAdmin(token)
}

// readToken reads the token from file (at most status.MaxTokenLen bytes,
// surrounding white space trimmed), or from the environment without one.
func readToken(file string, getenv func(string) string) ([]byte, error) {
	if file == "" {
		return []byte(strings.TrimSpace(getenv(tokenEnv))), nil
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("protoplex: admin token: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, status.MaxTokenLen+2))
	if err != nil {
		return nil, fmt.Errorf("protoplex: admin token: %w", err)
	}
	b = bytes.TrimSpace(b)
	if len(b) > status.MaxTokenLen {
		return nil, fmt.Errorf("protoplex: admin token %s: longer than %d bytes", file, status.MaxTokenLen)
	}
	return b, nil
}

// statusCommand runs status, target and unban.
func statusCommand(cmd string, args []string, stdout, stderr io.Writer) int {
	var spec struct{ args, help string }
	for _, c := range statusCommands {
		if c.name == cmd {
			spec.args, spec.help = c.args, c.help
		}
	}
	fs := newFlagSet("protoplex "+cmd, func(w io.Writer, fs *flag.FlagSet) {
		fmt.Fprintf(w, "usage: protoplex %s %s [-url URL | -config FILE]\n\n%s.\n\nFlags:\n", cmd, spec.args, strings.ToUpper(spec.help[:1])+spec.help[1:])
		printFlags(w, fs)
	})
	base := fs.String("url", "", "the running process's metrics port, `http://HOST:PORT` (default: from -config, else http://127.0.0.1:9091)")
	configPath := fs.String("config", "", "the running process's configuration `file`: its monitoring block gives the URL and the token file")
	tokenFile := fs.String("token-file", "", "admin token `file` (default: -config's monitoring.admin_token_file, else $"+tokenEnv+")")
	asJSON, problems := new(bool), new(bool)
	if cmd == "status" {
		fs.BoolVar(asJSON, "json", false, "print /status.json as it is")
		fs.BoolVar(problems, "problems", false, "only the targets with a problem (not up, a failed check, dial errors in the last minute)")
	}
	pos, code, ok := parseInterleaved(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	want := map[string]int{"status": 0, "target": 3, "unban": 1}[cmd]
	if len(pos) != want || (cmd == "target" && !validState(pos[0])) {
		fmt.Fprintf(stderr, "protoplex %s: want %s\n", cmd, strings.TrimSpace(spec.args))
		fs.help(stderr, fs.FlagSet)
		return exitUsage
	}
	api, err := newAPIClient(*base, *configPath, *tokenFile, os.Getenv)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitFail
	}
	switch cmd {
	case "status":
		q := status.Query{Problems: *problems}.Encode()
		body, err := api.get("/status.json" + q)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return exitFail
		}
		if *asJSON {
			stdout.Write(body)
			return exitOK
		}
		var s metrics.Status
		if err := json.Unmarshal(body, &s); err != nil {
			fmt.Fprintln(stderr, "protoplex status: the reply is not a status snapshot:", err)
			return exitFail
		}
		printStatus(stdout, &s)
		return exitOK
	case "target":
		err = api.post("/status/target", url.Values{"state": {pos[0]}, "route": {pos[1]}, "target": {pos[2]}}, stdout)
	case "unban":
		err = api.post("/status/unban", url.Values{"addr": {pos[0]}}, stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitFail
	}
	return exitOK
}

func validState(s string) bool { return s == "drain" || s == "maint" || s == "ready" }

// parseInterleaved parses flags that may come before, between or after
// the positional arguments.
func parseInterleaved(fs flagSet, args []string, stdout, stderr io.Writer) (pos []string, code int, ok bool) {
	fs.SetOutput(stderr)
	for {
		err := fs.Parse(args)
		switch {
		case errors.Is(err, flag.ErrHelp):
			fs.help(stdout, fs.FlagSet)
			return nil, exitOK, false
		case err != nil:
			fs.help(stderr, fs.FlagSet)
			return nil, exitUsage, false
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, exitOK, true
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// apiClient calls the running process's status API.
type apiClient struct {
	base  string
	token string
	http  *http.Client
}

func newAPIClient(base, configPath, tokenFile string, getenv func(string) string) (*apiClient, error) {
	if configPath != "" {
		cfg, err := protoplex.LoadConfig(configPath)
		if err != nil {
			return nil, err
		}
		m := cfg.Monitoring
		if base == "" {
			if m.MetricsPort == 0 {
				return nil, fmt.Errorf("protoplex: %s serves no metrics port (monitoring.metrics_port)", configPath)
			}
			host := m.BindAddress
			if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
				host = "127.0.0.1"
			}
			base = "http://" + net.JoinHostPort(host, strconv.Itoa(m.MetricsPort))
		}
		if tokenFile == "" {
			tokenFile = m.AdminTokenFile
		}
	}
	if base == "" {
		base = "http://127.0.0.1:9091"
	}
	token, err := readToken(tokenFile, getenv)
	if err != nil {
		return nil, err
	}
	return &apiClient{base: strings.TrimSuffix(base, "/"), token: string(token), http: &http.Client{Timeout: 15 * time.Second}}, nil
}

func (c *apiClient) get(path string) ([]byte, error) {
	resp, err := c.http.Get(c.base + path)
	if err != nil {
		return nil, fmt.Errorf("protoplex: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxStatusBody))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(body))
	}
	if err != nil {
		return nil, fmt.Errorf("protoplex: GET %s: %w", c.base+path, err)
	}
	return body, nil
}

// post sends an action and prints its result.
func (c *apiClient) post(path string, form url.Values, stdout io.Writer) error {
	req, err := http.NewRequest(http.MethodPost, c.base+path, strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("protoplex: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set(status.TokenHeader, c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("protoplex: %w", err)
	}
	defer resp.Body.Close()
	var res struct {
		OK      bool   `json:"ok"`
		Message string `json:"message"`
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxStatusBody))
	if json.Unmarshal(body, &res) != nil {
		res.Message = strings.TrimSpace(string(body))
	}
	if !res.OK {
		return fmt.Errorf("protoplex: %s: %s", resp.Status, res.Message)
	}
	fmt.Fprintln(stdout, "ok:", res.Message)
	return nil
}

// printStatus writes s for a terminal: the totals, one block per route
// with a line per target (the columns of metrics.TargetFields that say
// what is down, since when and how busy), the bans.
func printStatus(w io.Writer, s *metrics.Status) {
	t := s.Totals
	fmt.Fprintf(w, "protoplex %s, up %s, %d connections open (%d accepted), %d/%d fds, %s RSS\n",
		t.Version, status.Duration(t.UptimeSeconds), t.Active, t.Accepted, t.FDsOpen, t.FDsLimit, status.Format("bytes", t.MemoryBytes))
	if t.LastReloadResult != "" {
		fmt.Fprintf(w, "config %s (%s), last reload %s at %s\n", t.ConfigFile, t.ConfigHash, t.LastReloadResult, status.Format("time", t.LastReloadAt))
	}
	if s.Cluster.Distributed {
		fmt.Fprintf(w, "cluster: node %s, etcd %s, %d nodes\n", s.Cluster.NodeID, status.Format("etcd", s.Cluster.EtcdConnected), s.Cluster.Nodes)
	}
	// The columns that say what is down, since when and how busy, in the
	// field table's order, under its headings.
	cols := []string{"target", "state", "held", "since_seconds", "check", "check_duration_seconds", "active", "weight",
		"conn_rate_10s", "conn_rate_1m", "bytes_in_rate_10s", "bytes_out_rate_10s", "dial_errors_1m", "check_error"}
	fields := map[string]metrics.Field{}
	for _, f := range metrics.TargetFields {
		fields[f.Name] = f
	}
	for _, r := range s.Routes {
		fmt.Fprintf(w, "\nroute %s: %s conn/s over 10 s, %s over 1 min; in %s, out %s\n", r.Route, status.Format("rate", r.ConnRate10s), status.Format("rate", r.ConnRate1m),
			status.Format("bytes/s", r.BytesInRate10s), status.Format("bytes/s", r.BytesOutRate10s))
		if len(r.Targets) == 0 {
			continue
		}
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		titles := make([]string, len(cols))
		for i, c := range cols {
			titles[i] = strings.ToUpper(fields[c].Title)
		}
		fmt.Fprintln(tw, "  "+strings.Join(titles, "\t"))
		for i := range r.Targets {
			t := &r.Targets[i]
			cells := make([]string, len(cols))
			for j, c := range cols {
				cells[j] = status.Cell(fields[c], *t)
			}
			fmt.Fprintln(tw, "  "+strings.Join(cells, "\t"))
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "\n%d sources banned\n", s.Guard.BannedTotal)
	for _, b := range s.Guard.Banned {
		fmt.Fprintf(w, "  %s  %s  %s left\n", b.Source, b.Reason, status.Duration(b.RemainingSeconds))
	}
}
