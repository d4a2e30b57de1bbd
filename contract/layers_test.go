package contract_test

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/imagevol/imagevol/"

// layers is which of imagevol's packages each package may import (its doc comment says so too):
// the contract and the leaves below it; the steps and the workflows above them; the gateway and
// the worker on top. A package not listed here (commands, test suites) may import any.
var layers = map[string][]string{
	"contract":           {"imagesource", "storage"},
	"storage":            nil,
	"storage/rbd":        nil,
	"storage/librbd":     {"storage", "storage/rbd"},
	"imagesource":        nil,
	"imagesource/glance": {"imagesource"},
	"importer":           nil,
	"sandbox":            nil,
	"models":             nil,
	"tracing":            nil,
	"apiclient":          nil,
	"metrics":            {"models"},
	"devtemporal":        nil,
	"searchattr":         {"contract"},
	"config":             {"contract", "imagesource/glance", "importer", "models", "sandbox", "tracing"},
	"activities":         {"config", "contract", "imagesource", "importer", "metrics", "models", "sandbox", "storage", "storage/rbd"},
	"workflows":          {"activities", "contract", "models"},
	"worker":             {"activities", "config", "contract", "metrics", "models", "storage/rbd", "workflows"},
	"starter":            {"contract", "imagesource", "metrics", "models"},
}

// TestLayers checks the imports of every listed package's non-test files against layers, so
// that the gateway never links the steps, and settings never depend on the steps they set.
func TestLayers(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	for pkg, allowed := range layers {
		files, err := filepath.Glob(filepath.Join(root, filepath.FromSlash(pkg), "*.go"))
		if err != nil || len(files) == 0 {
			t.Errorf("package %s: no Go files (%v)", pkg, err)
			continue
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := parser.ParseFile(token.NewFileSet(), f, src, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range parsed.Imports {
				path := strings.Trim(imp.Path.Value, `"`)
				dep, ours := strings.CutPrefix(path, module)
				if ours && !slices.Contains(allowed, dep) {
					t.Errorf("%s imports %s; package %s may import only %v", filepath.Base(f), dep, pkg, allowed)
				}
			}
		}
	}
}
