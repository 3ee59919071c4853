package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
)

// subcommands are the etcd operator commands, in the order -h lists them.
var subcommands = []struct{ name, args, help string }{
	{"register", "-protocol P -instance I -address HOST:PORT [-weight N] [-ttl D]", "announce a backend for a protocol in etcd"},
	{"deregister", "-protocol P -instance I", "remove a backend announced with register"},
	{"nodes", "", "list the protoplex nodes registered in etcd"},
	{"services", "", "list the backends registered in etcd"},
}

// usage writes the main command's help: synopsis, flags, sub-commands.
func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, `usage: protoplex [-config FILE] [-listen ADDR] [-watch] [-check] [-version] [-upgrade PID]
       protoplex -from-sslh FILE [-from-sslh-args 'SSLH OPTIONS']   (print an sslh configuration as protoplex YAML)
       protoplex COMMAND -etcd HOSTS [flags]   (protoplex COMMAND -h for its flags)
       protoplex status|target|unban [ARGS] [-url URL | -config FILE]

protoplex serves several protocols on one port. Without -config it runs the
embedded configuration, which binds loopback only.

Flags:
`)
	printFlags(w, fs)
	fmt.Fprintf(w, "\nCommands:\n")
	for _, c := range subcommands {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.help)
	}
	for _, c := range statusCommands {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.help)
	}
	fmt.Fprintf(w, "\nSignals: SIGHUP reloads the -config file; SIGUSR2 upgrades (a new process of the binary takes the listeners);\nSIGTERM and SIGINT drain and exit.\nExit codes: 0 ok, 1 failure, 2 usage error. Reference: docs/cli.md.\n")
}

// operatorUsage writes the help of sub-command name.
func operatorUsage(name string) func(io.Writer, *flag.FlagSet) {
	return func(w io.Writer, fs *flag.FlagSet) {
		for _, c := range subcommands {
			if c.name == name {
				fmt.Fprintf(w, "usage: %s\n\n%s.\n\nFlags:\n", strings.TrimSpace("protoplex "+name+" -etcd HOSTS "+c.args), strings.ToUpper(c.help[:1])+c.help[1:])
			}
		}
		printFlags(w, fs)
	}
}

func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// flagSet is a flag.FlagSet with the help that parse prints.
type flagSet struct {
	*flag.FlagSet
	help func(io.Writer, *flag.FlagSet)
}

func newFlagSet(name string, help func(io.Writer, *flag.FlagSet)) flagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {} // parse prints the help, on the stream the case calls for
	return flagSet{fs, help}
}

// parse parses args and reports whether to go on. It does not when -h or
// --help asked for the help (printed on stdout, exit 0), or on a usage
// error: an unknown flag, a bad value, or any argument left after the
// flags (none is accepted), reported with the help on stderr, exit 2.
func parse(fs flagSet, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	fs.SetOutput(stderr) // flag's own message for a bad flag
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.help(stdout, fs.FlagSet)
		return exitOK, false
	case err != nil:
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
	default:
		return exitOK, true
	}
	fs.help(stderr, fs.FlagSet)
	return exitUsage, false
}

// versionLine is what -version prints: the module version (or -ldflags
// "-X main.version=..." when set) and the VCS revision, commit time and
// modified flag the go command stamped into the build info, e.g.
// "protoplex v1.2.3 (rev 0123456789ab, 2026-12-01T20:00:00Z)".
func versionLine() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = &debug.BuildInfo{}
	}
	return formatVersion(version, bi)
}

func formatVersion(override string, bi *debug.BuildInfo) string {
	v := bi.Main.Version
	if override != "" {
		v = override
	}
	if v == "" {
		v = "(unknown)"
	}
	var rev, when string
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" {
		return "protoplex " + v
	}
	parts := []string{"rev " + rev[:min(len(rev), 12)]}
	if when != "" {
		parts = append(parts, when)
	}
	if modified {
		parts = append(parts, "modified")
	}
	return fmt.Sprintf("protoplex %s (%s)", v, strings.Join(parts, ", "))
}
