package main

import (
	"fmt"
	"io"
	"net"
	"os"

	"github.com/darkit/protoplex/internal/config"
	"github.com/darkit/protoplex/internal/sslhconv"
)

// fromSSLH holds the flags that convert an sslh configuration:
//
//	protoplex -from-sslh /etc/sslh/sslh.cfg > config.yaml
//	protoplex -from-sslh-args "$(grep ^DAEMON_OPTS /etc/default/sslh)" > config.yaml
//
// Given both, the command line applies over the file, as in sslh.
type fromSSLH struct {
	file, args *string
}

func fromSSLHFlags(fs flagSet) fromSSLH {
	return fromSSLH{
		file: fs.String("from-sslh", "", "convert an sslh configuration `file` (sslh.cfg; - for stdin) into protoplex YAML on stdout, checked as -check does, and exit (docs/migrating-from-sslh.md)"),
		args: fs.String("from-sslh-args", "", "convert an sslh command `line` (as DAEMON_OPTS in /etc/default/sslh), over -from-sslh's file when both are given, and exit"),
	}
}

// run converts when either flag is set: the YAML on stdout, and exit 0;
// a conversion error (file:line) or a converted configuration the checker
// refuses on stderr, exit 1. done is false when neither flag is set.
func (f fromSSLH) run(stdin io.Reader, stdout, stderr io.Writer) (code int, done bool) {
	if *f.file == "" && *f.args == "" {
		return 0, false
	}
	in := sslhconv.Input{FileName: *f.file, LookupPort: net.LookupPort}
	if in.FileName == "-" {
		in.FileName = "stdin"
	}
	if *f.file != "" {
		data, err := readSSLH(*f.file, stdin)
		if err != nil {
			fmt.Fprintln(stderr, "protoplex:", err)
			return exitFail, true
		}
		in.File = data
	}
	if *f.args != "" {
		args, err := sslhconv.SplitArgs(*f.args)
		if err != nil {
			fmt.Fprintln(stderr, "protoplex: -from-sslh-args:", err)
			return exitUsage, true
		}
		in.Args = args
	}
	out, err := sslhconv.Convert(in)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitFail, true
	}
	stdout.Write(out)
	if _, err := config.Parse(out, "converted configuration"); err != nil {
		fmt.Fprintf(stderr, "protoplex: the converted configuration fails the check (fix it before use):\n%v\n", err)
		return exitFail, true
	}
	return exitOK, true
}

// readSSLH reads path ("-": stdin), at most sslhconv.MaxInput bytes and
// one more, which Convert refuses with the file's name.
func readSSLH(path string, stdin io.Reader) ([]byte, error) {
	r := stdin
	if path != "-" {
		fh, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer fh.Close()
		if st, err := fh.Stat(); err != nil || !st.Mode().IsRegular() {
			return nil, fmt.Errorf("%s: not a regular file", path)
		}
		r = fh
	}
	return io.ReadAll(io.LimitReader(r, sslhconv.MaxInput+1))
}
