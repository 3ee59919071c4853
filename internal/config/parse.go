package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// StringList is a YAML value that may be written as one string or a list.
type StringList []string

// UnmarshalYAML accepts `x` and `[x, y]`.
func (l *StringList) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*l = StringList{n.Value}
		return nil
	case yaml.SequenceNode:
		var s []string
		if err := n.Decode(&s); err != nil {
			return err
		}
		*l = s
		return nil
	}
	return fmt.Errorf("line %d: want a string or a list of strings", n.Line)
}

//go:embed default.yaml
var defaultYAML []byte

// DefaultYAML returns the embedded default configuration.
func DefaultYAML() []byte { return bytes.Clone(defaultYAML) }

// Default is the configuration used without a file: listen
// 127.0.0.1:9090, metrics 127.0.0.1:9091, health 127.0.0.1:9092,
// SSH/HTTP/TLS/Redis to their local ports.
func Default() *Config {
	c, err := Parse(defaultYAML, "default.yaml")
	if err != nil {
		panic("protoplex: embedded default config: " + err.Error()) // a build defect, caught by tests
	}
	return c
}

// Load reads and validates the YAML file at path. A file over 4 MiB is
// refused before it is parsed.
func Load(path string) (*Config, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data, path)
}

// readFile reads at most MaxFileSize bytes of path: a file that is
// larger (a wrong path, a log file) is never held in memory whole. Only a
// regular file (or a symlink to one, as in a Kubernetes ConfigMap) is read:
// opening a FIFO would block until a writer comes, a device may never end.
func readFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("protoplex: %w", err)
	}
	if err := regularFile(path, st); err != nil {
		return nil, err
	}
	// Opened without blocking and checked again: the file may have been
	// replaced since the Stat.
	f, err := openConfig(path)
	if err != nil {
		return nil, fmt.Errorf("protoplex: %w", err)
	}
	defer f.Close()
	if st, err = f.Stat(); err != nil {
		return nil, fmt.Errorf("protoplex: %w", err)
	}
	if err := regularFile(path, st); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("protoplex: %w", err)
	}
	if len(data) > MaxFileSize {
		return nil, tooLarge(path)
	}
	return data, nil
}

// regularFile refuses anything but a regular file, naming what it is.
func regularFile(path string, st os.FileInfo) error {
	m := st.Mode()
	if m.IsRegular() {
		return nil
	}
	what := "mode " + m.String()
	switch {
	case m&os.ModeNamedPipe != 0:
		what = "a FIFO"
	case m.IsDir():
		what = "a directory"
	case m&os.ModeSocket != 0:
		what = "a socket"
	case m&os.ModeDevice != 0:
		what = "a device"
	}
	return fmt.Errorf("%s: not a regular file (%s): refused", path, what)
}

func tooLarge(name string) error {
	return fmt.Errorf("%s: larger than %d bytes (4 MiB), the limit of a configuration; refused before parsing", name, MaxFileSize)
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): `)

// Parse decodes, defaults and validates YAML. Every error names
// filename:line and what is wrong; all errors are reported, not the first.
func Parse(data []byte, filename string) (*Config, error) { return parse(data, filename, nil) }

// ParseShared is Parse for a configuration shared through etcd, read by a
// node whose own distributed: block is node: that block applies, whatever
// the shared file says, and is what the checks see (target: [] is valid
// when the node discovers targets).
func ParseShared(data []byte, filename string, node Distributed) (*Config, error) {
	return parse(data, filename, &node)
}

func parse(data []byte, filename string, node *Distributed) (*Config, error) {
	if len(data) > MaxFileSize {
		return nil, tooLarge(filename)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlError(filename, data, err)
	}
	c := &Config{}
	var errs []error
	if len(root.Content) > 0 {
		doc := root.Content[0]
		if n, err := aliasCost(doc); err != nil {
			return nil, fmt.Errorf("%s:%d: %v", filename, n.Line, err)
		}
		errs = decode(doc, c, filename)
		if doc.Kind == yaml.MappingNode {
			if p := mapValue(doc, "protocols"); p != nil && p.Kind == yaml.SequenceNode {
				for i, item := range p.Content {
					if i < len(c.Protocols) {
						c.Protocols[i].Line = item.Line
					}
				}
			}
			c.Monitoring.disableUnwanted(mapValue(doc, "monitoring"))
		}
	}
	errs = append(errs, c.loadNames(filename, &root)...)
	c.applyDefaults()
	c.Source = filename
	if node != nil {
		c.Distributed = *node
	}
	if errs = append(errs, c.check(filename, &root)...); len(errs) > 0 {
		return nil, errors.Join(byLine(filename, errs)...)
	}
	return c, nil
}

// byLine orders errors "file:N: ..." by N, stably: a file's errors read
// top to bottom whichever pass found them; errors without a line come first.
func byLine(file string, errs []error) []error {
	line := func(err error) int {
		rest, _ := strings.CutPrefix(err.Error(), file+":")
		digits, _, _ := strings.Cut(rest, ":")
		n, _ := strconv.Atoi(digits)
		return n
	}
	slices.SortStableFunc(errs, func(a, b error) int { return line(a) - line(b) })
	return errs
}

// yamlError rewrites yaml.v3's "line N: msg" into "file:N: msg". For a
// syntax error N is the line the error is about (problemLine), not the one
// yaml.v3 names.
func yamlError(filename string, data []byte, err error) error {
	var te *yaml.TypeError
	var msgs []string
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	var errs []error
	for _, m := range msgs {
		if sub := yamlLine.FindStringSubmatch(m); sub != nil {
			line, _ := strconv.Atoi(sub[1])
			if te == nil {
				line = problemLine(data, line, m[len(sub[0]):])
			}
			m = filename + ":" + strconv.Itoa(line) + ": " + m[len(sub[0]):]
		} else {
			m = filename + ": " + m
		}
		errs = append(errs, errors.New(m))
	}
	return errors.Join(errs...)
}

// problemLine returns the line a YAML syntax error (msg, which yaml.v3
// reported at line from) is about. yaml.v3 names the line where the
// enclosing block begins (libyaml's context mark), so a list item indented
// one space too little on line 6 is reported at the "protocols:" of line 3;
// the line the parser could not place is the last line of the shortest
// prefix of the file that fails with the same message. A prefix that stops
// before it parses, or fails otherwise (a flow collection or a quoted
// string cut short), so the prefixes from line from on are searched by
// bisection: log2(lines) parses, for a file whose first parse failed.
func problemLine(data []byte, from int, msg string) int {
	ends := []int{} // ends[i]: the length of the prefix of lines 1..i+1
	for i, b := range data {
		if b == '\n' {
			ends = append(ends, i+1)
		}
	}
	if len(ends) == 0 || ends[len(ends)-1] != len(data) {
		ends = append(ends, len(data))
	}
	fails := func(lines int) bool {
		var n yaml.Node
		err := yaml.Unmarshal(data[:ends[lines-1]], &n)
		if err == nil {
			return false
		}
		m := err.Error()
		if sub := yamlLine.FindStringSubmatch(m); sub != nil {
			m = m[len(sub[0]):]
		}
		return m == msg
	}
	lo, hi := max(from, 1), len(ends) // fails(hi): the whole file fails so
	if lo > hi || !fails(hi) {
		return from
	}
	for lo < hi {
		if mid := (lo + hi) / 2; fails(mid) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

func mapValue(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// lineOf returns the line of the value at path (keys, or "#i" for list
// items) in root, or the deepest line found.
func lineOf(root *yaml.Node, path ...string) int {
	n, _ := nodeAt(root, path...)
	if n == nil {
		return 0
	}
	return n.Line
}

// given reports whether root has a value at path that is not null: a key
// whose value failed to decode is given, though its field stayed empty.
func given(root *yaml.Node, path ...string) bool {
	n, found := nodeAt(root, path...)
	return found && !(n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

// nodeAt returns the node at path in root, or the deepest one found and
// false.
func nodeAt(root *yaml.Node, path ...string) (*yaml.Node, bool) {
	if root == nil || len(root.Content) == 0 {
		return nil, false
	}
	n := dealias(root.Content[0])
	for _, k := range path {
		var next *yaml.Node
		if strings.HasPrefix(k, "#") {
			i, _ := strconv.Atoi(k[1:])
			if n.Kind == yaml.SequenceNode && i < len(n.Content) {
				next = n.Content[i]
			}
		} else if n.Kind == yaml.MappingNode {
			next = mapValue(n, k)
		}
		if next == nil {
			return n, false
		}
		n = dealias(next)
	}
	return n, true
}

// disableUnwanted turns off a monitoring port whose enable_ key the file
// sets to false, whatever its port says. A file that leaves the key out
// serves the port it names.
func (m *Monitoring) disableUnwanted(block *yaml.Node) {
	if block == nil || block.Kind != yaml.MappingNode {
		return
	}
	if n := mapValue(block, "enable_metrics"); n != nil && !m.EnableMetrics {
		m.MetricsPort = 0
	}
	if n := mapValue(block, "enable_health_check"); n != nil && !m.EnableHealthCheck {
		m.HealthCheckPort = 0
	}
}
