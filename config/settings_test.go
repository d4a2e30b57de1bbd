package config

import (
	"flag"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imagevol/imagevol/importer"
	"github.com/imagevol/imagevol/sandbox"
)

// samples are two valid values of a setting, a differing from its default and from b.
func samples(s setting) (a, b string) {
	switch s.typ {
	case reflect.TypeFor[int]():
		return "7", "8"
	case reflect.TypeFor[bool]():
		def, _ := parseBool(s.def)
		return strconv.FormatBool(!def), strconv.FormatBool(def)
	case reflect.TypeFor[[]string]():
		return "a,b", "c"
	case reflect.TypeFor[[]importer.Format]():
		return "raw", "iso"
	case reflect.TypeFor[time.Duration]():
		return "7s", "8s"
	case reflect.TypeFor[map[string]Quota]():
		return "demo=3", "ops=volumes:4"
	}
	return "sample-a", "sample-b"
}

// yamlFor writes key: value as nested YAML.
func yamlFor(key, value string) string {
	parts := strings.Split(key, ".")
	var b strings.Builder
	for i, p := range parts[:len(parts)-1] {
		fmt.Fprintf(&b, "%s%s:\n", strings.Repeat("  ", i), p)
	}
	fmt.Fprintf(&b, "%s%s: %q\n", strings.Repeat("  ", len(parts)-1), parts[len(parts)-1], value)
	return b.String()
}

// TestSettingsDeclared shows that declaring a setting once (a tagged field in settings.go) is
// all it takes: every declared setting is read from its YAML key, overridden by its variable,
// overridden in turn by its flag on the commands that take its section, and documented in
// docs/deploy.md.
func TestSettingsDeclared(t *testing.T) {
	guide, err := os.ReadFile("../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	keys, envs, flags := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, s := range declared() {
		t.Run(s.key, func(t *testing.T) {
			clearEnv(t)
			for name, seen := range map[string]map[string]bool{s.key: keys, s.env: envs, s.flag: flags} {
				if name != "" && seen[name] {
					t.Errorf("%s declared twice", name)
				}
				seen[name] = true
			}
			if s.help == "" {
				t.Error("no help")
			}
			row := regexp.MustCompile("(?m)^\\| `" + regexp.QuoteMeta(s.key) + "` \\| `" + regexp.QuoteMeta(s.env) + "` \\|")
			if !row.Match(guide) {
				t.Errorf("docs/deploy.md: no row | `%s` | `%s` | ...", s.key, s.env)
			}

			want := func(text string) any {
				v, err := kinds[s.typ].parse(s, text)
				if err != nil {
					t.Fatalf("%q: %v", text, err)
				}
				if s.invert {
					v = !v.(bool)
				}
				return v
			}
			// Errors are not the point here: a sample may fail a check of the whole (a
			// clouds.yaml that does not exist, a certificate without its key).
			got := func(f File, _ error) any {
				return reflect.ValueOf(f).FieldByIndex(s.index).Interface()
			}
			check := func(source string, f any, text string) {
				t.Helper()
				if w := want(text); !reflect.DeepEqual(f, w) {
					t.Errorf("%s: got %#v, want %#v", source, f, w)
				}
			}
			a, b := samples(s)
			check("default", got(LoadFile("")), s.def)
			check("file", got(LoadFile(writeFile(t, "imagevol.yaml", yamlFor(s.key, a)))), a)
			fileB := writeFile(t, "b.yaml", yamlFor(s.key, b))
			t.Setenv(s.env, a)
			check("environment", got(LoadFile("")), a)
			check("environment over file", got(LoadFile(fileB)), a)

			section, _, _ := strings.Cut(s.key, ".")
			fs := flag.NewFlagSet("cmd", flag.ContinueOnError)
			t.Setenv(s.env, b)
			t.Setenv("IMAGEVOL_CONFIG", fileB)
			if s.flag == "" {
				check("no flag", got(Load(fs, nil, section)), b)
				return
			}
			check("flag over environment and file", got(Load(fs, []string{"--" + s.flag + "=" + a}, section)), a)
			if fl := fs.Lookup(s.flag); fl == nil || fl.Usage != s.help {
				t.Errorf("flag --%s: %+v", s.flag, fl)
			}
			other := flag.NewFlagSet("other", flag.ContinueOnError)
			if _, _ = Load(other, nil, "none"); other.Lookup(s.flag) != nil {
				t.Errorf("--%s registered for a command without section %s", s.flag, section)
			}
		})
	}
}

// TestDefaultsAgree keeps the declared defaults in step with the constants other packages use.
func TestDefaultsAgree(t *testing.T) {
	def := map[string]string{}
	for _, s := range declared() {
		def[s.key] = s.def
	}
	for key, want := range map[string]string{
		"worker.allowed_formats":   importer.FormatList(importer.DefaultAllowedFormats()),
		"worker.sandbox.cpu_time":  "1h",
		"worker.sandbox.memory_mb": strconv.FormatInt(sandbox.DefaultAddressSpace>>20, 10),
	} {
		if def[key] != want {
			t.Errorf("%s: declared default %q, want %q", key, def[key], want)
		}
	}
	if sandbox.DefaultCPUTime.String() != "1h0m0s" {
		t.Errorf("sandbox.DefaultCPUTime is %s, worker.sandbox.cpu_time's default 1h", sandbox.DefaultCPUTime)
	}
}

func TestEnvTemporalTLS(t *testing.T) {
	clearEnv(t)
	t.Setenv("IMAGEVOL_TEMPORAL_TLS_SERVER_NAME", "temporal.example")
	t.Setenv("IMAGEVOL_TEMPORAL_TLS_CA", "/ca.pem")
	if got := EnvTemporalTLS(); got != (TemporalTLS{ServerName: "temporal.example", CAFile: "/ca.pem"}) {
		t.Errorf("EnvTemporalTLS() = %+v", got)
	}
}
