package status

import (
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/darkit/protoplex/internal/metrics"
)

//go:embed assets
var embedded embed.FS

// assetsFS is the page's script and style sheet, served from the binary.
var assetsFS, _ = fs.Sub(embedded, "assets")

var page = template.Must(template.New("status.html").Funcs(template.FuncMap{
	"fmtv": Format,
	"path": func(parts ...any) string {
		s := make([]string, len(parts))
		for i, p := range parts {
			s[i] = fmt.Sprint(p)
		}
		return strings.Join(s, ".")
	},
	"join": func(v []string) string { return strings.Join(v, ", ") },
	"kind": cellKind,
	"cell": Cell,
}).ParseFS(embedded, "assets/status.html"))

// pageData is what the template renders.
type pageData struct {
	S         *metrics.Status
	Q         Query
	Protocols []string        // every route's protocol, for the filter
	Fields    []metrics.Field // the target columns: TargetFields without route and protocol
	Filtered  bool
}

func (h *handler) page(w http.ResponseWriter, r *http.Request) {
	all := h.cfg.Snapshot()
	q := ParseQuery(r.URL.Query())
	d := pageData{S: Filter(all, q), Q: q, Filtered: q != Query{}}
	for _, rt := range all.Routes {
		if !slices.Contains(d.Protocols, rt.Protocol) {
			d.Protocols = append(d.Protocols, rt.Protocol)
		}
	}
	for _, f := range metrics.TargetFields {
		if f.Name != "route" && f.Name != "protocol" {
			d.Fields = append(d.Fields, f)
		}
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := page.Execute(w, d); err != nil {
		h.cfg.Log.Warn("status page", "err", err)
	}
}

// Cell is target t's value of column f as the page and `protoplex status`
// show it: the check's duration is blank where there is no check.
func Cell(f metrics.Field, t metrics.TargetState) string {
	if f.Name == "check_duration_seconds" && t.Check == "" {
		return ""
	}
	return Format(cellKind(f), f.Get(&t))
}

// cellKind is how the page shows a target column: held reads "operator".
func cellKind(f metrics.Field) string {
	if f.Name == "held" {
		return "held"
	}
	return f.Kind
}

// Format writes v for a person, by kind (metrics.Field.Kind and the
// page's other values). assets/status.js formats the same way.
func Format(kind string, v any) string {
	f, isNum := number(v)
	switch kind {
	case "state":
		return strings.ToUpper(fmt.Sprint(v))
	case "bool":
		if v == true {
			return "yes"
		}
		return ""
	case "held":
		if v == true {
			return "operator"
		}
		return ""
	case "int":
		return fmt.Sprintf("%.0f", f)
	case "float":
		return fmt.Sprintf("%.2f", f)
	case "rate":
		return fmt.Sprintf("%.1f/s", f)
	case "bytes":
		return human(f, "B")
	case "bytes/s":
		return human(f, "B/s")
	case "seconds":
		return Duration(f)
	case "time":
		t, _ := v.(time.Time)
		if t.IsZero() {
			return "never"
		}
		return t.UTC().Format(time.RFC3339)
	}
	if isNum {
		return fmt.Sprint(v)
	}
	return fmt.Sprint(v)
}

func number(v any) (float64, bool) {
	switch v := v.(type) {
	case int:
		return float64(v), true
	case int64:
		return float64(v), true
	case uint64:
		return float64(v), true
	case float64:
		return v, true
	}
	return 0, false
}

// human is n in binary units: 0 B, 512 B, 1.5 KiB, 3.2 MiB...
func human(n float64, unit string) string {
	if n < 1024 {
		return fmt.Sprintf("%.0f %s", n, unit)
	}
	exp := min(int(math.Log(n)/math.Log(1024)), 5)
	return fmt.Sprintf("%.1f %ci%s", n/math.Pow(1024, float64(exp)), "KMGTP"[exp-1], unit)
}

// Duration is s seconds, short: 0 s, 85 µs, 12 ms, 4.2 s, 3m05s, 2h07m, 3d04h.
func Duration(s float64) string {
	switch {
	case s <= 0:
		return "0 s"
	case s < 0.001:
		return fmt.Sprintf("%.0f µs", s*1e6)
	case s < 1:
		return fmt.Sprintf("%.0f ms", s*1000)
	case s < 60:
		return fmt.Sprintf("%.1f s", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", int(s)/60, int(s)%60)
	case s < 86400:
		return fmt.Sprintf("%dh%02dm", int(s)/3600, int(s)%3600/60)
	}
	return fmt.Sprintf("%dd%02dh", int(s)/86400, int(s)%86400/3600)
}
