package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/imagevol/imagevol/importer"
)

// setting is one declared setting: a tagged field of File (see settings.go).
type setting struct {
	key, env, flag, def, help string
	check                     string // nonempty, hostport, url; a trailing ? allows empty
	limit                     bool   // min:"-1": -1 means no limit
	invert                    bool
	index                     []int // of the field, from File
	typ                       reflect.Type
}

// declared lists File's settings in declaration order, from its tags; a malformed declaration
// panics (TestSettingsDeclared runs this).
var declared = sync.OnceValue(func() []setting {
	var out []setting
	var walk func(t reflect.Type, prefix string, index []int)
	walk = func(t reflect.Type, prefix string, index []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			key, ok := f.Tag.Lookup("key")
			if !ok {
				continue
			}
			idx := append(slices.Clone(index), i)
			if _, ok := f.Tag.Lookup("env"); !ok {
				if f.Type.Kind() != reflect.Struct {
					panic("config: " + prefix + key + ": a setting needs an env tag")
				}
				walk(f.Type, prefix+key+".", idx)
				continue
			}
			s := setting{key: prefix + key, env: f.Tag.Get("env"), flag: f.Tag.Get("flag"), def: f.Tag.Get("default"),
				help: f.Tag.Get("help"), check: f.Tag.Get("check"), limit: f.Tag.Get("min") == "-1",
				invert: f.Tag.Get("invert") == "true", index: idx, typ: f.Type}
			if _, ok := kinds[s.typ]; !ok {
				panic(fmt.Sprintf("config: %s: no kind of setting for %s", s.key, s.typ))
			}
			if s.invert && s.typ != reflect.TypeFor[bool]() {
				panic("config: " + s.key + ": only a bool can be inverted")
			}
			out = append(out, s)
		}
	}
	walk(reflect.TypeFor[File](), "", nil)
	return out
})

// kind is how one Go type of setting is read from text and offered as a flag.
type kind struct {
	// parse reads the key's value (for an inverted bool, the key's, not the field's).
	parse func(s setting, text string) (any, error)
	// define registers the flag, its default v (nil when the value did not parse).
	define func(fs *flag.FlagSet, s setting, v any)
	// node turns the file's value, when it is not one scalar, into text; nil: only a scalar.
	node func(n *yaml.Node) (string, error)
}

func typed[T any](v any) T {
	t, _ := v.(T)
	return t
}

var kinds = map[reflect.Type]kind{
	reflect.TypeFor[string](): {
		parse:  func(_ setting, s string) (any, error) { return s, nil },
		define: func(fs *flag.FlagSet, s setting, v any) { fs.String(s.flag, typed[string](v), s.help) },
	},
	reflect.TypeFor[int](): {
		parse: func(st setting, s string) (any, error) {
			n, err := strconv.Atoi(s)
			switch {
			case err != nil:
				return 0, fmt.Errorf("%q is not an integer", s)
			case st.limit && n < -1:
				return 0, fmt.Errorf("%d: want a limit >= 0, or -1 for none", n)
			case !st.limit && n < 0:
				return 0, fmt.Errorf("%d is negative", n)
			}
			return n, nil
		},
		define: func(fs *flag.FlagSet, s setting, v any) { fs.Int(s.flag, typed[int](v), s.help) },
	},
	reflect.TypeFor[bool](): {
		parse: func(_ setting, s string) (any, error) {
			b, ok := parseBool(s)
			if !ok {
				return false, fmt.Errorf("%q is not a boolean (true/false, yes/no, on/off, 1/0)", s)
			}
			return b, nil
		},
		define: func(fs *flag.FlagSet, s setting, v any) { fs.Bool(s.flag, typed[bool](v), s.help) },
	},
	reflect.TypeFor[time.Duration](): {
		parse: func(_ setting, s string) (any, error) {
			d, err := time.ParseDuration(s)
			switch {
			case err != nil:
				return time.Duration(0), fmt.Errorf("%q is not a duration (like 10m or 1h30m)", s)
			case d < 0:
				return time.Duration(0), fmt.Errorf("%s is negative", d)
			}
			return d, nil
		},
		define: func(fs *flag.FlagSet, s setting, v any) { fs.Duration(s.flag, typed[time.Duration](v), s.help) },
	},
	// Lists: a YAML sequence, or one comma-separated value as in the environment.
	reflect.TypeFor[[]string](): {
		parse: func(_ setting, s string) (any, error) { return SplitList(s), nil },
		define: func(fs *flag.FlagSet, s setting, v any) {
			fs.String(s.flag, strings.Join(typed[[]string](v), ","), s.help)
		},
		node: sequence,
	},
	reflect.TypeFor[[]importer.Format](): {
		parse: func(_ setting, s string) (any, error) { return importer.ParseFormats(s) },
		define: func(fs *flag.FlagSet, s setting, v any) {
			fs.String(s.flag, importer.FormatList(typed[[]importer.Format](v)), s.help)
		},
		node: sequence,
	},
	// Quotas: a YAML mapping of project to a count of volumes or to a mapping of quota names
	// to limits, or one value in ParseQuotas' form.
	reflect.TypeFor[map[string]Quota](): {
		parse: func(_ setting, s string) (any, error) { return ParseQuotas(s) },
		define: func(fs *flag.FlagSet, s setting, v any) {
			fs.String(s.flag, FormatQuotas(typed[map[string]Quota](v)), s.help)
		},
		node: quotaMapping,
	},
}

// sequence is a YAML list of scalars as one comma-separated value.
func sequence(n *yaml.Node) (string, error) {
	if n.Kind != yaml.SequenceNode {
		return "", fmt.Errorf("line %d: want a list", n.Line)
	}
	items := make([]string, 0, len(n.Content))
	for _, c := range n.Content {
		if c.Kind != yaml.ScalarNode {
			return "", fmt.Errorf("line %d: want a list of names", c.Line)
		}
		items = append(items, strings.TrimSpace(c.Value))
	}
	return strings.Join(items, ","), nil
}

// quotaMapping is a YAML mapping of quotas in ParseQuotas' form.
func quotaMapping(n *yaml.Node) (string, error) {
	if n.Kind != yaml.MappingNode {
		return "", fmt.Errorf("line %d: want a mapping of project to count", n.Line)
	}
	var parts []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch v.Kind {
		case yaml.ScalarNode:
			parts = append(parts, k.Value+"="+v.Value)
		case yaml.MappingNode:
			var limits []string
			for j := 0; j+1 < len(v.Content); j += 2 {
				if v.Content[j+1].Kind != yaml.ScalarNode {
					return "", fmt.Errorf("line %d: want quota: limit", v.Content[j+1].Line)
				}
				limits = append(limits, v.Content[j].Value, v.Content[j+1].Value)
			}
			parts = append(parts, k.Value+"="+strings.Join(limits, ":"))
		default:
			return "", fmt.Errorf("line %d: want project: count, or project: {volumes: N, gigabytes: M}", v.Line)
		}
	}
	return strings.Join(parts, ","), nil
}

// LoadFile reads the YAML file at path (none when path is empty), lays the environment over
// it and the defaults under it, and checks the result. Unknown keys are errors; every error
// names its key, and the variable when the value came from the environment. An empty
// variable counts as unset.
func LoadFile(path string) (File, error) {
	l, err := read(path)
	if err != nil {
		return File{}, err
	}
	return l.finish()
}

// Load reads a command's configuration: defaults, under the file named by --config or
// IMAGEVOL_CONFIG (ConfigPath), under the environment, under flags. It registers on fs
// --config and the flags of the settings of the named sections (as "worker"), with the
// values the file and the environment give as their defaults, and parses args with fs.
func Load(fs *flag.FlagSet, args []string, sections ...string) (File, error) {
	l, err := read(ConfigPath(args))
	if err != nil {
		return File{}, err
	}
	fs.String("config", "", "YAML config file (or IMAGEVOL_CONFIG); see docs/deploy.md")
	byFlag := map[string]setting{}
	for _, s := range declared() {
		section, _, _ := strings.Cut(s.key, ".")
		if s.flag == "" || !slices.Contains(sections, section) {
			continue
		}
		v, err := kinds[s.typ].parse(s, l.text[s.key])
		if err != nil {
			v = nil // reported after parsing, unless a flag replaces it
		}
		kinds[s.typ].define(fs, s, v)
		byFlag[s.flag] = s
	}
	if err := fs.Parse(args); err != nil {
		return File{}, err
	}
	fs.Visit(func(f *flag.Flag) {
		if s, ok := byFlag[f.Name]; ok {
			l.text[s.key], l.origin[s.key] = f.Value.String(), "--"+f.Name
		}
	})
	return l.finish()
}

// loader holds every setting's text, and where it came from, until it is parsed and checked.
type loader struct {
	text   map[string]string // key -> value as text
	origin map[string]string // key -> the variable or flag that set it; absent: file or default
	errs   []error
}

// read gathers every setting's text: the variable's if set, else the file's, else the default.
func read(path string) (*loader, error) {
	file, err := readYAML(path)
	if err != nil {
		return nil, err
	}
	l := &loader{text: map[string]string{}, origin: map[string]string{}}
	for _, s := range declared() {
		if e := Env(s.env, ""); e != "" {
			l.text[s.key], l.origin[s.key] = e, s.env
		} else if v, ok := file[s.key]; ok {
			l.text[s.key] = strings.TrimSpace(v)
		} else {
			l.text[s.key] = s.def
		}
	}
	return l, nil
}

// readYAML reads the file's settings as text by key; unknown keys are errors naming their
// full key.
func readYAML(path string) (map[string]string, error) {
	out := map[string]string{}
	if path == "" {
		return out, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	byKey, sections := map[string]setting{}, map[string]bool{}
	for _, s := range declared() {
		byKey[s.key] = s
		for p := s.key; strings.Contains(p, "."); {
			p = p[:strings.LastIndex(p, ".")]
			sections[p] = true
		}
	}
	var errs []string
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		if n.Kind == yaml.AliasNode {
			n = n.Alias
		}
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return // an empty section
		}
		if n.Kind != yaml.MappingNode {
			what := strings.TrimSuffix(prefix, ".")
			if what == "" {
				what = "the file"
			}
			errs = append(errs, fmt.Sprintf("line %d: %s: want a mapping of keys", n.Line, what))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			key := prefix + k.Value
			if v.Kind == yaml.AliasNode {
				v = v.Alias
			}
			s, ok := byKey[key]
			switch {
			case sections[key]:
				walk(v, key+".")
			case !ok:
				errs = append(errs, fmt.Sprintf("line %d: unknown key %s", k.Line, key))
			case v.Kind == yaml.ScalarNode:
				if _, dup := out[key]; dup {
					errs = append(errs, fmt.Sprintf("line %d: %s is given twice", k.Line, key))
				}
				if v.Tag != "!!null" {
					out[key] = v.Value
				}
			case kinds[s.typ].node == nil:
				errs = append(errs, fmt.Sprintf("line %d: %s: want a single value", v.Line, key))
			default:
				text, err := kinds[s.typ].node(v)
				if err != nil {
					errs = append(errs, fmt.Sprintf("%s: %v", key, err))
				}
				out[key] = text
			}
		}
	}
	if len(doc.Content) > 0 {
		walk(doc.Content[0], "")
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("config: %s: %s", path, strings.Join(errs, "; "))
	}
	return out, nil
}

// finish parses every setting into a File and checks it.
func (l *loader) finish() (File, error) {
	var f File
	root := reflect.ValueOf(&f).Elem()
	for _, s := range declared() {
		v, err := kinds[s.typ].parse(s, l.text[s.key])
		if err != nil {
			l.bad(s.key, "%v", err)
			continue
		}
		if s.invert {
			v = !v.(bool)
		}
		root.FieldByIndex(s.index).Set(reflect.ValueOf(v))
		switch text := l.text[s.key]; strings.TrimSuffix(s.check, "?") {
		case "nonempty":
			if text == "" {
				l.bad(s.key, "must not be empty")
			}
		case "hostport":
			l.hostPort(s.key, text, strings.HasSuffix(s.check, "?"))
		case "url":
			l.httpURL(s.key, text, strings.HasSuffix(s.check, "?"))
		}
	}
	l.check(&f)
	return f, errors.Join(l.errs...)
}

// bad records that key's value is wrong.
func (l *loader) bad(key, format string, args ...any) {
	where := key
	if from := l.origin[key]; from != "" {
		where += " (from " + from + ")"
	}
	l.errs = append(l.errs, fmt.Errorf("config: %s: %s", where, fmt.Sprintf(format, args...)))
}

func parseBool(s string) (bool, bool) {
	switch strings.ToLower(s) {
	case "1", "true", "yes", "on":
		return true, true
	case "0", "false", "no", "off":
		return false, true
	}
	return false, false
}
