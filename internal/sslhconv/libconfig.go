package sslhconv

import (
	"fmt"
	"strconv"
	"strings"
)

// The subset of libconfig (https://hyperrealm.github.io/libconfig/) that
// sslh.cfg uses: settings "name: value;" (or "="), groups { }, lists ( ),
// arrays [ ], strings with escapes (adjacent strings concatenated),
// integers (decimal, 0x hex, an L suffix), floats, booleans, and #, // and
// /* */ comments. @include is refused: the input is one file.

// Bounds of the parser: the input is a local file, but no input can make it
// use more than these.
const (
	// MaxInput is the largest configuration read (sslh's are a few KiB).
	MaxInput = 1 << 20
	// MaxDepth bounds the nesting of groups, lists and arrays.
	MaxDepth = 16
	// maxValues bounds the values of one file (settings, items).
	maxValues = 100_000
)

type kind uint8

const (
	kGroup kind = iota
	kList
	kArray
	kString
	kInt
	kFloat
	kBool
)

func (k kind) String() string {
	return [...]string{"a group { }", "a list ( )", "an array [ ]", "a string", "an integer", "a number", "true or false"}[k]
}

// value is one parsed libconfig value.
type value struct {
	kind   kind
	line   int
	str    string
	num    int64
	float  float64
	bool   bool
	items  []*value   // list, array
	fields []*setting // group, in file order
}

// setting is one "name: value" of a group (the file is a group).
type setting struct {
	name string
	line int
	v    *value
}

// field returns the setting called name, or nil.
func (v *value) field(name string) *setting {
	for _, s := range v.fields {
		if s.name == name {
			return s
		}
	}
	return nil
}

// parseError is a parse failure at a line of the file.
type parseError struct {
	line int
	msg  string
}

func (e *parseError) Error() string { return fmt.Sprintf("%d: %s", e.line, e.msg) }

// parser reads one libconfig document.
type parser struct {
	src    []byte
	pos    int
	line   int
	values int
}

// parseLibconfig parses src into its top-level group.
func parseLibconfig(src []byte) (*value, error) {
	if len(src) > MaxInput {
		return nil, &parseError{1, fmt.Sprintf("%d bytes, more than the %d an sslh configuration is read up to", len(src), MaxInput)}
	}
	p := &parser{src: src, line: 1}
	root := &value{kind: kGroup, line: 1}
	if err := p.settings(root, 0, 0); err != nil {
		return nil, err
	}
	return root, nil
}

func (p *parser) fail(format string, args ...any) error {
	return &parseError{p.line, fmt.Sprintf(format, args...)}
}

// skip passes blanks and comments.
func (p *parser) skip() error {
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		switch {
		case c == '\n':
			p.line++
			p.pos++
		case c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v':
			p.pos++
		case c == '#' || c == '/' && p.peek(1) == '/':
			for p.pos < len(p.src) && p.src[p.pos] != '\n' {
				p.pos++
			}
		case c == '/' && p.peek(1) == '*':
			start := p.line
			p.pos += 2
			for {
				if p.pos >= len(p.src) {
					return &parseError{start, "comment /* never closed with */"}
				}
				if p.src[p.pos] == '*' && p.peek(1) == '/' {
					p.pos += 2
					break
				}
				if p.src[p.pos] == '\n' {
					p.line++
				}
				p.pos++
			}
		default:
			return nil
		}
	}
	return nil
}

func (p *parser) peek(off int) byte {
	if p.pos+off < len(p.src) {
		return p.src[p.pos+off]
	}
	return 0
}

// settings reads "name: value;" into g until close (0: the end of input).
func (p *parser) settings(g *value, close byte, depth int) error {
	seen := map[string]int{} // name → line: a repeated name is an error
	for {
		if err := p.skip(); err != nil {
			return err
		}
		if p.pos >= len(p.src) {
			if close != 0 {
				return &parseError{g.line, fmt.Sprintf("group opened here is never closed with %q", close)}
			}
			return nil
		}
		c := p.src[p.pos]
		if c == close {
			p.pos++
			return nil
		}
		if c == ')' || c == ']' || c == '}' {
			return p.fail("%q where the group opened on line %d wants %s", c, g.line, closing(close))
		}
		if c == '@' {
			word := p.word()
			if word == "@include" {
				return p.fail("@include: not supported; convert the included file's settings in this one")
			}
			return p.fail("unexpected %q", word)
		}
		line := p.line
		name := p.word()
		if name == "" || !validName(name) {
			return p.fail("want a setting name, got %s", p.describe())
		}
		if first, dup := seen[name]; dup {
			return p.fail("setting %q is given twice (first on line %d)", name, first)
		}
		seen[name] = line
		if err := p.skip(); err != nil {
			return err
		}
		if c := p.peek(0); c != ':' && c != '=' {
			return p.fail("want ':' or '=' after %q, got %s", name, p.describe())
		}
		p.pos++
		v, err := p.value(depth + 1)
		if err != nil {
			return err
		}
		g.fields = append(g.fields, &setting{name: name, line: line, v: v})
		if err := p.skip(); err != nil {
			return err
		}
		if c := p.peek(0); c == ';' || c == ',' {
			p.pos++
		}
	}
}

func closing(close byte) string {
	if close == 0 {
		return "a setting"
	}
	return strconv.Quote(string(close))
}

// validName: a letter or '*', then letters, digits, '-', '_' or '*'.
func validName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '*'
		if !letter && (i == 0 || !(c >= '0' && c <= '9' || c == '-' || c == '_')) {
			return false
		}
	}
	return s != ""
}

// word reads the run of name, number or @ characters at pos.
func (p *parser) word() string {
	start := p.pos
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '*' || c == '@' || c == '.' || c == '+') {
			break
		}
		p.pos++
	}
	return string(p.src[start:p.pos])
}

// describe names what is at pos, for an error.
func (p *parser) describe() string {
	if p.pos >= len(p.src) {
		return "the end of the file"
	}
	c := p.src[p.pos]
	if c < ' ' || c > '~' {
		return fmt.Sprintf("byte 0x%02x", c)
	}
	return strconv.Quote(string(c))
}

// value reads one value at nesting depth.
func (p *parser) value(depth int) (*value, error) {
	if err := p.skip(); err != nil {
		return nil, err
	}
	if depth > MaxDepth {
		return nil, p.fail("nested deeper than %d levels", MaxDepth)
	}
	if p.values++; p.values > maxValues {
		return nil, p.fail("more than %d values", maxValues)
	}
	v := &value{line: p.line}
	switch c := p.peek(0); {
	case c == '{':
		p.pos++
		v.kind = kGroup
		return v, p.settings(v, '}', depth)
	case c == '(' || c == '[':
		p.pos++
		v.kind, v.items = kList, nil
		close := byte(')')
		if c == '[' {
			v.kind, close = kArray, ']'
		}
		return v, p.items(v, close, depth)
	case c == '"':
		v.kind = kString
		var b strings.Builder
		for p.peek(0) == '"' {
			if err := p.str(&b); err != nil {
				return nil, err
			}
			if err := p.skip(); err != nil {
				return nil, err
			}
		}
		v.str = b.String()
		return v, nil
	default:
		word := p.word()
		if word == "" {
			return nil, p.fail("want a value, got %s", p.describe())
		}
		return v, p.scalar(v, word)
	}
}

// items reads the values of a list or array until close.
func (p *parser) items(v *value, close byte, depth int) error {
	for {
		if err := p.skip(); err != nil {
			return err
		}
		if p.pos >= len(p.src) {
			return &parseError{v.line, fmt.Sprintf("%s opened here is never closed with %q", v.kind, close)}
		}
		if p.src[p.pos] == close {
			p.pos++
			return nil
		}
		item, err := p.value(depth + 1)
		if err != nil {
			return err
		}
		if v.kind == kArray && item.kind <= kArray {
			return &parseError{item.line, fmt.Sprintf("an array [ ] holds scalars only, got %s", item.kind)}
		}
		v.items = append(v.items, item)
		if err := p.skip(); err != nil {
			return err
		}
		switch p.peek(0) {
		case ',':
			p.pos++
		case close:
		default:
			return p.fail("want ',' or %q in %s, got %s", close, v.kind, p.describe())
		}
	}
}

// str appends one quoted string's contents to b: escapes \\ \" \f \n \r
// \t and \xNN (a byte).
func (p *parser) str(b *strings.Builder) error {
	start := p.line
	p.pos++ // the opening quote
	for {
		if p.pos >= len(p.src) {
			return &parseError{start, "string never closed with '\"'"}
		}
		c := p.src[p.pos]
		p.pos++
		switch c {
		case '"':
			if b.Len() > MaxInput {
				return &parseError{start, "string too long"}
			}
			return nil
		case '\n':
			return &parseError{start, "string not closed on its line"}
		case '\\':
			e := p.peek(0)
			p.pos++
			switch e {
			case '\\', '"':
				b.WriteByte(e)
			case 'f':
				b.WriteByte('\f')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case 'x':
				if p.pos+2 > len(p.src) {
					return p.fail(`\x wants two hex digits`)
				}
				n, err := strconv.ParseUint(string(p.src[p.pos:p.pos+2]), 16, 8)
				if err != nil {
					return p.fail(`\x wants two hex digits, got %q`, p.src[p.pos:p.pos+2])
				}
				p.pos += 2
				b.WriteByte(byte(n))
			default:
				return p.fail(`unknown escape \%c in a string (libconfig knows \\ \" \f \n \r \t \xNN)`, e)
			}
		default:
			b.WriteByte(c)
		}
	}
}

// scalar parses a bare word: a boolean, an integer or a float.
func (p *parser) scalar(v *value, word string) error {
	switch strings.ToLower(word) {
	case "true":
		v.kind, v.bool = kBool, true
		return nil
	case "false":
		v.kind = kBool
		return nil
	}
	num := strings.TrimSuffix(strings.TrimSuffix(word, "L"), "L")
	if strings.HasPrefix(num, "0x") || strings.HasPrefix(num, "0X") {
		n, err := strconv.ParseUint(num[2:], 16, 64)
		if err != nil {
			return p.fail("%q: not a hex integer", word)
		}
		v.kind, v.num = kInt, int64(n)
		return nil
	}
	if n, err := strconv.ParseInt(num, 10, 64); err == nil {
		v.kind, v.num = kInt, n
		return nil
	}
	if f, err := strconv.ParseFloat(word, 64); err == nil && strings.ContainsAny(word, ".eE") {
		v.kind, v.float = kFloat, f
		return nil
	}
	return p.fail("want a value (a \"string\", a number, true or false, { }, ( ) or [ ]), got %q", word)
}
