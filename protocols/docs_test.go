package protocols

import (
	"os"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// docsTable is the file with the table of built-in protocols, and the
// header of its first column.
const (
	docsTable       = "../docs/protocols.md"
	docsTableHeader = "protocol (YAML name)"
)

// docsRow is one row of the table: its cells by column header.
type docsRow map[string]string

// readDocsTable returns the rows of the built-in protocol table.
func readDocsTable(t *testing.T) []docsRow {
	t.Helper()
	raw, err := os.ReadFile(docsTable)
	if err != nil {
		t.Fatal(err)
	}
	var header []string
	var rows []docsRow
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "|") {
			if header != nil {
				break // the table ended
			}
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		switch {
		case header == nil && len(cells) > 0 && cells[0] == docsTableHeader:
			header = cells
		case header == nil || strings.HasPrefix(cells[0], "---"):
		case len(cells) != len(header):
			t.Fatalf("%s: row %q has %d cells, the header %d", docsTable, line, len(cells), len(header))
		default:
			row := docsRow{}
			for i, h := range header {
				row[h] = cells[i]
			}
			rows = append(rows, row)
		}
	}
	if header == nil {
		t.Fatalf("%s: no table with a %q column", docsTable, docsTableHeader)
	}
	for _, h := range []string{"constructor", "first", "transport", "options"} {
		if !slices.Contains(header, h) {
			t.Fatalf("%s: the table has no %q column", docsTable, h)
		}
	}
	return rows
}

// codeSpans returns the `backticked` words of a cell, in order.
func codeSpans(cell string) []string {
	var out []string
	parts := strings.Split(cell, "`")
	for i := 1; i < len(parts); i += 2 {
		out = append(out, parts[i])
	}
	return out
}

func funcName(f any) string {
	n := runtime.FuncForPC(reflect.ValueOf(f).Pointer()).Name()
	return n[strings.LastIndexByte(n, '.')+1:]
}

// TestDocsTable: the table of built-in protocols in docs/protocols.md has one
// row per registered protocol, in any order, naming exactly its YAML names
// (Name first, then aliases), its constructor first, who speaks first and,
// among the options, exactly the route conditions that apply to it. Adding,
// renaming or changing a protocol without its row fails here.
func TestDocsTable(t *testing.T) {
	rows := readDocsTable(t)
	byName := map[string]docsRow{}
	for _, row := range rows {
		names := codeSpans(row[docsTableHeader])
		if len(names) == 0 {
			t.Errorf("%s: a row names no protocol: %v", docsTable, row)
			continue
		}
		d, ok := Describe(names[0])
		if !ok {
			t.Errorf("%s: %q is not a registered protocol", docsTable, names[0])
			continue
		}
		if !slices.Equal(names, d.YAMLNames()) {
			t.Errorf("%s: row %v lists %v, want %s's names %v", docsTable, names[0], names, d.Name, d.YAMLNames())
		}
		if _, dup := byName[d.Name]; dup {
			t.Errorf("%s: two rows for %s", docsTable, d.Name)
		}
		byName[d.Name] = row
	}
	for _, d := range Descriptors() {
		row, ok := byName[d.Name]
		if !ok {
			t.Errorf("%s: no row for %s (YAML names %v)", docsTable, d.Name, d.YAMLNames())
			continue
		}
		if ctors := codeSpans(row["constructor"]); len(ctors) == 0 || ctors[0] != funcName(d.New) {
			t.Errorf("%s: %s's constructor cell %q, want %s first", docsTable, d.Name, row["constructor"], funcName(d.New))
		}
		first := "client"
		if d.ServerFirst {
			first = "server"
		}
		if row["first"] != first {
			t.Errorf("%s: %s speaks first: %q, want %q", docsTable, d.Name, row["first"], first)
		}
		if got := strings.ReplaceAll(row["transport"], " ", ""); got != d.Transports.String() {
			t.Errorf("%s: %s's transport %q, want %q", docsTable, d.Name, row["transport"], d.Transports)
		}
		var keys []string
		for _, w := range codeSpans(row["options"]) {
			if slices.Contains((SNIKey | ALPNKey | HostKey).Names(), w) {
				keys = append(keys, w)
			}
		}
		if want := d.Routable.Names(); !slices.Equal(keys, want) {
			t.Errorf("%s: %s's options name conditions %v, want %v", docsTable, d.Name, keys, want)
		}
	}
}
