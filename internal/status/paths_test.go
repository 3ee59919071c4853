package status

import "sort"

// jsonPaths lists the leaf paths of a decoded JSON value: "a.b", a list's
// elements as "a[].b", a list of scalars as "a[]".
func jsonPaths(v any, prefix string) []string {
	var out []string
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			out = append(out, jsonPaths(e, p)...)
		}
	case []any:
		if len(v) == 0 {
			return []string{prefix + "[]"}
		}
		out = append(out, jsonPaths(v[0], prefix+"[]")...)
	default:
		out = append(out, prefix)
	}
	sort.Strings(out)
	return out
}
