package config

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/darkit/protoplex/internal/identify"
	"github.com/darkit/protoplex/protocols"
)

// Bounds of a names file (sni_file, host_file): it is read on every load
// and reload, one line at a time, so neither a huge file nor a line
// without end is held in memory. The names of all files and lists together
// are bounded by identify.MaxNames.
const (
	MaxNamesFileSize = 32 << 20 // 100,000 names of 253 characters, and comments
	maxNamesLine     = 1024     // a name (253) and a comment
)

// loadNames reads the sni_file and host_file of every protocols: entry and
// appends their names to the entry's sni and host lists, after those
// written inline. A relative path is relative to the directory of the
// configuration file (file). Errors name the names file and line.
func (c *Config) loadNames(file string, root *yaml.Node) []error {
	var errs []error
	total := 0
	for i := range c.Protocols {
		p := &c.Protocols[i]
		name := fmt.Sprintf("protocols[%d] (%s)", i, p.Name)
		for _, f := range []struct {
			key, path string
			list      *StringList
			loaded    *int
		}{{"sni_file", p.SNIFile, &p.SNI, &p.fileSNI}, {"host_file", p.HostFile, &p.Host, &p.fileHost}} {
			if f.path == "" {
				continue
			}
			path := f.path
			if !filepath.IsAbs(path) && file != "" {
				path = filepath.Join(filepath.Dir(file), path)
			}
			names, ferrs := readNames(path, fmt.Sprintf("%s: %s", name, f.key), identify.MaxNames-total, *f.list)
			if len(ferrs) == 1 && errors.Is(ferrs[0], errOpen) {
				// Not read: the error is the configuration's, at the key.
				where := file + ": "
				if l := lineOf(root, "protocols", fmt.Sprintf("#%d", i), f.key); l > 0 {
					where = fmt.Sprintf("%s:%d: ", file, l)
				}
				ferrs = []error{fmt.Errorf("%s%s: %s %q: %w", where, name, f.key, f.path, ferrs[0])}
			}
			if len(names) == 0 && len(ferrs) == 0 {
				// Without names the entry would have no condition and take
				// every connection of its protocol.
				ferrs = []error{fmt.Errorf("%s: %s: %s: no names in the file", path, name, f.key)}
			}
			errs = append(errs, ferrs...)
			total += len(names)
			*f.list = append(append(StringList(nil), (*f.list)...), names...)
			*f.loaded = len(names)
		}
	}
	return errs
}

// readNames reads one name per line from path: spaces around a name are
// dropped, "#" starts a comment, blank lines are skipped. Each name is
// checked as an sni or host entry written inline, and must not be listed
// twice, in the file or inline; at most most names are read (the rest of
// the file is an error). what prefixes each error.
func readNames(path, what string, most int, inline []string) (names []string, errs []error) {
	f, err := openNames(path)
	if err != nil {
		return nil, []error{fmt.Errorf("%w: %v", errOpen, err)}
	}
	defer f.Close()
	r := &countReader{r: io.LimitReader(f, MaxNamesFileSize+1)}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxNamesLine+1)
	seen := map[string]int{} // name → its line, 0 when written inline
	for _, n := range inline {
		seen[protocols.NormalizeName(n)] = 0
	}
	bad, line := 0, 0
	report := func(format string, a ...any) bool {
		if bad++; bad > maxReported {
			errs = append(errs, fmt.Errorf("%s:%d: %s: more lines like these", path, line, what))
			return false
		}
		errs = append(errs, fmt.Errorf("%s:%d: %s: "+format, append([]any{path, line, what}, a...)...))
		return true
	}
	for sc.Scan() {
		line++
		text, _, _ := strings.Cut(sc.Text(), "#")
		n := strings.TrimSpace(text)
		if n == "" {
			continue
		}
		if len(names) == most {
			report("more than %d names in all sni, alpn and host lists and files", identify.MaxNames)
			return nil, errs
		}
		var msg string
		switch err := checkName(n); {
		case len(n) > maxConditionLen || !printable(n):
			msg = fmt.Sprintf("%q: want 1 to %d printable characters", n, maxConditionLen)
		case err != nil:
			msg = err.Error()
		}
		key := protocols.NormalizeName(n)
		if first, dup := seen[key]; dup && msg == "" {
			msg = fmt.Sprintf("%q is listed twice (first at line %d)", n, first)
			if first == 0 {
				msg = fmt.Sprintf("%q is listed twice (also written inline)", n)
			}
		}
		if msg != "" {
			if !report("%s", msg) {
				return nil, errs
			}
			continue
		}
		seen[key] = line
		names = append(names, n)
	}
	switch err := sc.Err(); {
	case errors.Is(err, bufio.ErrTooLong):
		line++
		errs = append(errs, fmt.Errorf("%s:%d: %s: a line of more than %d bytes", path, line, what, maxNamesLine))
	case err != nil:
		errs = append(errs, fmt.Errorf("%s: %s: %v", path, what, err))
	case r.n > MaxNamesFileSize:
		errs = append(errs, fmt.Errorf("%s: %s: larger than %d bytes (32 MiB), the limit of a names file", path, what, MaxNamesFileSize))
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return names, nil
}

// errOpen marks a names file that could not be opened.
var errOpen = errors.New("cannot read it")

// openNames opens a regular file (not a FIFO that would block, nor a
// device), without blocking, as readFile does.
func openNames(path string) (*os.File, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if err := regularFile(path, st); err != nil {
		return nil, err
	}
	f, err := openConfig(path)
	if err != nil {
		return nil, err
	}
	if st, err = f.Stat(); err == nil {
		err = regularFile(path, st)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n int
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}
