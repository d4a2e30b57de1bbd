package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"

	"go.yaml.in/yaml/v3"
)

// Output formats.
const (
	formatJSON  = "json"
	formatYAML  = "yaml"
	formatTable = "table"
)

// outputFormat is the format -o asked for, or, when it asked for none, a table on a terminal
// and JSON otherwise (what scripts have always read).
func outputFormat(flagValue string, tty bool) (string, error) {
	switch f := strings.ToLower(flagValue); f {
	case formatJSON, formatYAML, formatTable:
		return f, nil
	case "":
		if tty {
			return formatTable, nil
		}
		return formatJSON, nil
	}
	return "", fmt.Errorf("unknown output format %q: want json, yaml or table", flagValue)
}

// isTerminal says whether f is a terminal (a character device; /dev/null is one too, but
// nobody reads it).
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// render writes v, a decoded JSON answer, to w in format.
func render(w io.Writer, format string, v any) error {
	switch format {
	case formatYAML:
		enc := yaml.NewEncoder(w)
		enc.SetIndent(2)
		if err := enc.Encode(v); err != nil {
			return err
		}
		return enc.Close()
	case formatTable:
		return renderTable(w, v)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// columnOrder puts the columns people look for first; the others follow alphabetically.
var columnOrder = []string{"id", "name", "status", "image_id", "size_gb", "host", "cache", "pinned",
	"workflow_id", "run_id", "error"}

// listColumns are the columns of a list that would be too wide with all its fields.
var listColumns = map[string][]string{
	"volumes": {"id", "name", "status", "image_id", "size_gb", "host", "cache", "created_at"},
}

// renderTable writes v as a table: a list (an array of objects, or an object whose one field
// is one, as {"volumes": [...]}) one row per element; any other object one row per field.
func renderTable(w io.Writer, v any) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if m, ok := v.(map[string]any); ok && len(m) == 1 {
		for k, inner := range m {
			if rows, ok := objects(inner); ok {
				writeRows(tw, rows, listColumns[k])
				return tw.Flush()
			}
		}
	}
	if rows, ok := objects(v); ok {
		writeRows(tw, rows, nil)
		return tw.Flush()
	}
	m, ok := v.(map[string]any)
	if !ok {
		fmt.Fprintln(tw, cell(v))
		return tw.Flush()
	}
	fmt.Fprintln(tw, "FIELD\tVALUE")
	for _, k := range orderedKeys(m) {
		fmt.Fprintf(tw, "%s\t%s\n", k, cell(m[k]))
	}
	return tw.Flush()
}

// objects is v as a list of objects, if it is one.
func objects(v any) ([]map[string]any, bool) {
	list, ok := v.([]any)
	if !ok {
		return nil, false
	}
	rows := make([]map[string]any, 0, len(list))
	for _, e := range list {
		m, ok := e.(map[string]any)
		if !ok {
			return nil, false
		}
		rows = append(rows, m)
	}
	return rows, true
}

// writeRows writes a header and one line per row: the columns given, or else every field that
// holds a scalar in some row; columns empty in every row are left out.
func writeRows(w io.Writer, rows []map[string]any, columns []string) {
	if len(rows) == 0 {
		fmt.Fprintln(w, "(none)")
		return
	}
	if columns == nil {
		seen := map[string]any{}
		for _, r := range rows {
			for k, v := range r {
				switch v.(type) {
				case map[string]any, []any:
				default:
					seen[k] = v
				}
			}
		}
		columns = orderedKeys(seen)
	}
	columns = slices.DeleteFunc(slices.Clone(columns), func(c string) bool {
		return !slices.ContainsFunc(rows, func(r map[string]any) bool { return cell(r[c]) != "" })
	})
	head := make([]string, len(columns))
	for i, c := range columns {
		head[i] = strings.ToUpper(c)
	}
	fmt.Fprintln(w, strings.Join(head, "\t"))
	for _, r := range rows {
		line := make([]string, len(columns))
		for i, c := range columns {
			line[i] = cell(r[c])
		}
		fmt.Fprintln(w, strings.Join(line, "\t"))
	}
}

// orderedKeys are m's keys, those of columnOrder first.
func orderedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	rank := func(k string) int {
		if i := slices.Index(columnOrder, k); i >= 0 {
			return i
		}
		return len(columnOrder)
	}
	sort.Slice(keys, func(i, j int) bool {
		if ri, rj := rank(keys[i]), rank(keys[j]); ri != rj {
			return ri < rj
		}
		return keys[i] < keys[j]
	})
	return keys
}

// cell is a value as a table shows it: scalars as text (whole numbers without an exponent),
// objects and lists as compact JSON, nothing for null.
func cell(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case float64:
		if v == float64(int64(v)) {
			return fmt.Sprint(int64(v))
		}
		return fmt.Sprint(v)
	case map[string]any, []any:
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Sprint(v)
		}
		return string(b)
	}
	return fmt.Sprint(v)
}
