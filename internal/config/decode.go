package config

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// decoder fills a Config from the YAML node tree, checking every key and
// value against the yaml tags of the Config types. It reports, in YAML
// terms and with the line of each, every unknown key (with the closest
// known one), every key given twice and every value of the wrong type, and
// still decodes every value that fits, so that validation runs on the rest
// of the file and a type error never hides another error.
type decoder struct {
	file string
	errs []error
	// homes maps each key of the model to the sections that have it
	// ("server", "protocols[].pool"), to point a key written in the wrong
	// section to its place.
	homes map[string][]string
}

// decode fills c from doc, the document node of a file, and returns the
// errors found.
func decode(doc *yaml.Node, c *Config, file string) []error {
	d := &decoder{file: file, homes: map[string][]string{}}
	d.index(reflect.TypeFor[Config](), "")
	for _, homes := range d.homes {
		slices.Sort(homes)
	}
	d.value(doc, reflect.ValueOf(c).Elem(), "")
	return d.errs
}

// maxAliasNodes bounds the nodes that aliases add to a document when each
// is replaced by what it names: nested aliases ("billion laughs") would
// otherwise make a small file cost exponential work to decode.
const maxAliasNodes = 1_000_000

// aliasCost refuses a document whose aliases name a node they are part of,
// or expand it by more than maxAliasNodes nodes; the node returned is where.
func aliasCost(doc *yaml.Node) (*yaml.Node, error) {
	// Only anchored nodes can be reached twice, or from inside themselves:
	// only they are remembered.
	sizes := map[*yaml.Node]int{} // nodes under each anchor, aliases expanded
	open := map[*yaml.Node]bool{} // the anchors being sized, root to here
	written := 0                  // nodes of the document as written
	var at *yaml.Node
	var size func(n *yaml.Node) int
	size = func(n *yaml.Node) int {
		if v, ok := sizes[n]; ok || at != nil {
			return v
		}
		kids := n.Content
		if n.Kind == yaml.AliasNode && n.Alias != nil {
			if open[n.Alias] {
				at = n
				return 0
			}
			kids = []*yaml.Node{n.Alias}
		} else {
			written++
		}
		if n.Anchor != "" {
			open[n] = true
		}
		total := 1
		for _, k := range kids {
			total = min(total+size(k), math.MaxInt32)
		}
		if n.Anchor != "" {
			delete(open, n)
			sizes[n] = total
		}
		return total
	}
	total := size(doc)
	switch {
	case at != nil:
		return at, fmt.Errorf("alias *%s is part of the node it names", at.Value)
	case total-written > maxAliasNodes:
		return doc, fmt.Errorf("aliases expand the document by more than %d nodes (aliases of aliases?)", maxAliasNodes)
	}
	return nil, nil
}

func (d *decoder) add(n *yaml.Node, format string, a ...any) {
	d.errs = append(d.errs, fmt.Errorf("%s:%d: %s", d.file, n.Line, fmt.Sprintf(format, a...)))
}

var (
	durationType    = reflect.TypeFor[time.Duration]()
	stringListType  = reflect.TypeFor[StringList]()
	unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
)

// value decodes n into v; label is the YAML path of n in messages.
func (d *decoder) value(n *yaml.Node, v reflect.Value, label string) {
	n = dealias(n)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // "key:" with no value leaves the key unset
	}
	t := v.Type()
	switch {
	case leaf(t):
		if fraction(t, n) {
			d.add(n, "%s: want a whole number, got %s", label, got(n))
			return
		}
		if err := n.Decode(v.Addr().Interface()); err != nil {
			d.add(n, "%s: %s, got %s", label, want(t, n), got(n))
		}
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			d.add(n, "%swant a mapping (key: value lines), got %s", prefix(label), got(n))
			return
		}
		d.mapping(n, v, label)
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.add(n, "%s: want a list, got %s", label, got(n))
			return
		}
		if leaf(t.Elem()) && n.Decode(v.Addr().Interface()) == nil {
			return // the common case in one pass: long lists of addresses
		}
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.value(item, s.Index(i), itemLabel(label, i, item, t.Elem()))
		}
		v.Set(s)
	default:
		if err := n.Decode(v.Addr().Interface()); err != nil {
			d.add(n, "%s: %s, got %s", label, want(t, n), got(n))
		}
	}
}

// mapping decodes the keys of n into the struct v. Keys merged in with
// "<<: *anchor" are decoded first, so the keys written beside them win, as
// YAML merges do.
func (d *decoder) mapping(n *yaml.Node, v reflect.Value, label string) {
	fields := yamlFields(v.Type())
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
			d.merge(n.Content[i+1], v, label)
		}
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
			continue
		}
		if k.Kind != yaml.ScalarNode {
			d.add(k, "%swant a key name, got %s", prefix(label), got(k))
			continue
		}
		if label == "" && strings.HasPrefix(k.Value, "x-") {
			continue // a place for anchors, as in Compose files
		}
		idx, ok := fields[k.Value]
		if !ok {
			d.unknown(k, label, fields)
			continue
		}
		if line, dup := seen[k.Value]; dup {
			d.add(k, "%skey %q is given twice (first on line %d)", prefix(label), k.Value, line)
			continue
		}
		seen[k.Value] = k.Line
		d.value(val, v.FieldByIndex(idx), join(label, k.Value))
	}
}

func (d *decoder) merge(n *yaml.Node, v reflect.Value, label string) {
	n = dealias(n)
	switch n.Kind {
	case yaml.MappingNode:
		d.mapping(n, v, label)
	case yaml.SequenceNode:
		for _, m := range n.Content {
			d.merge(m, v, label)
		}
	default:
		d.add(n, "%s<<: want a mapping to merge, got %s", prefix(label), got(n))
	}
}

// unknown reports key k, unknown in the section label, with the closest
// known key of that section, or the section the key belongs to.
func (d *decoder) unknown(k *yaml.Node, label string, fields map[string][]int) {
	what := "unknown key"
	if label == "" {
		what = "unknown section"
	}
	known := make([]string, 0, len(fields))
	for name := range fields {
		known = append(known, name)
	}
	slices.Sort(known)
	switch best, ok := closest(k.Value, known); {
	case ok:
		d.add(k, "%s%s %q (did you mean %q?)", prefix(label), what, k.Value, best)
	case len(d.homes[k.Value]) > 0:
		d.add(k, "%s%s %q: it belongs under %s", prefix(label), what, k.Value, strings.Join(d.homes[k.Value], " or "))
	default:
		d.add(k, "%s%s %q; known: %s", prefix(label), what, k.Value, strings.Join(known, ", "))
	}
}

// index records in d.homes the section of every key under t.
func (d *decoder) index(t reflect.Type, section string) {
	for name, idx := range yamlFields(t) {
		if section != "" {
			d.homes[name] = append(d.homes[name], section)
		}
		ft := t.FieldByIndex(idx).Type
		sub := join(section, name)
		if ft.Kind() == reflect.Slice && !leaf(ft) {
			ft, sub = ft.Elem(), sub+"[]"
		}
		if ft.Kind() == reflect.Struct && !leaf(ft) {
			d.index(ft, sub)
		}
	}
}

// yamlFields maps the yaml key of each field of the struct t to its index.
func yamlFields(t reflect.Type) map[string][]int {
	out := map[string][]int{}
	for _, f := range reflect.VisibleFields(t) {
		if !f.IsExported() || f.Anonymous {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Index
	}
	return out
}

// leaf reports whether values of t are decoded whole by yaml.v3: scalars,
// durations and types with their own UnmarshalYAML (StringList).
func leaf(t reflect.Type) bool {
	if t == durationType || reflect.PointerTo(t).Implements(unmarshalerType) {
		return true
	}
	switch t.Kind() {
	case reflect.Bool, reflect.String, reflect.Float32, reflect.Float64,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

// want says what a value of t is written as, for n that is not one.
func want(t reflect.Type, n *yaml.Node) string {
	switch {
	case t == durationType:
		return `want a duration such as "5s"`
	case t == stringListType:
		return "want a string or a list of strings"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "want true or false"
	case reflect.String:
		return "want a string"
	case reflect.Float32, reflect.Float64:
		return "want a number"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if n.Tag == "!!int" {
			return fmt.Sprintf("want a number from %d to %d", minInt(t), maxInt(t))
		}
		if n.Tag == "!!float" {
			return "want a whole number"
		}
		return "want a number"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "want a whole number from 0"
	case reflect.Slice:
		return "want a list"
	case reflect.Map, reflect.Struct:
		return "want a mapping (key: value lines)"
	}
	return "want a " + t.String()
}

// fraction reports whether n is a number with a fraction for an integer
// t, which yaml.v3 would truncate.
func fraction(t reflect.Type, n *yaml.Node) bool {
	if n.Tag != "!!float" || t == durationType {
		return false
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		f, err := strconv.ParseFloat(n.Value, 64)
		return err != nil || f != math.Trunc(f)
	}
	return false
}

func minInt(t reflect.Type) int64 { return -maxInt(t) - 1 }
func maxInt(t reflect.Type) int64 { return math.MaxInt64 >> (64 - t.Bits()) }

// got shows n as the file has it: a scalar as written (strings quoted), a
// list or a mapping by its kind.
func got(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	}
	s := n.Value
	if len(s) > 40 {
		s = s[:37] + "..."
	}
	if n.Tag == "!!str" {
		return strconv.Quote(s)
	}
	return s
}

func dealias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// join appends key to the YAML path label: "server" + "listen" is
// "server.listen"; the keys of a protocols: entry follow its name,
// "protocols[0] (SSH): pool".
func join(label, key string) string {
	switch {
	case label == "":
		return key
	case strings.HasSuffix(label, ")"):
		return label + ": " + key
	}
	return label + "." + key
}

// itemLabel names item i of the list label: a protocols: entry by its
// name too, as validation does.
func itemLabel(label string, i int, item *yaml.Node, elem reflect.Type) string {
	s := fmt.Sprintf("%s[%d]", label, i)
	if elem == reflect.TypeFor[Protocol]() {
		item = dealias(item)
		name := ""
		if item.Kind == yaml.MappingNode {
			if n := mapValue(item, "name"); n != nil && n.Kind == yaml.ScalarNode {
				name = n.Value
			}
		}
		s += " (" + name + ")"
	}
	return s
}

// prefix is "label: ", or "" at the top of the file.
func prefix(label string) string {
	if label == "" {
		return ""
	}
	return label + ": "
}

// closest returns the name of known nearest to s by edit distance, when
// close enough to be a typo: at most 2 edits, and fewer than half of s.
func closest(s string, known []string) (string, bool) {
	best, bestDist := "", 3
	for _, k := range known {
		if d := levenshtein(strings.ToLower(s), k); d < bestDist && 2*d < len(s) {
			best, bestDist = k, d
		}
	}
	return best, best != ""
}

// levenshtein counts the single-byte insertions, deletions and
// substitutions that turn a into b.
func levenshtein(a, b string) int {
	row := make([]int, len(b)+1)
	for j := range row {
		row[j] = j
	}
	for i := range len(a) {
		diag := row[0]
		row[0] = i + 1
		for j := range len(b) {
			next := diag
			if a[i] != b[j] {
				next = 1 + min(diag, row[j], row[j+1])
			}
			diag, row[j+1] = row[j+1], next
		}
	}
	return row[len(b)]
}
