package starter

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// routePattern is a ServeMux pattern with a method, as the gateway registers its routes.
var routePattern = regexp.MustCompile(`^(GET|HEAD|POST|PUT|PATCH|DELETE) (/\S*)$`)

// sourceRoutes collects every "METHOD /path" string literal of the package's non-test sources:
// the patterns Handler and the route helpers register, wherever they are written, as documented
// (routeOf). The Cinder routes under /v3/{project_id}/ follow Cinder's API reference and are not
// in the document; its version discovery is.
func sourceRoutes(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var out []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err == nil && s == "/{$}" {
				s = "GET /{$}" // the status page and version discovery, which also answers 405 itself
			}
			if m := routePattern.FindStringSubmatch(s); err == nil && m != nil && !strings.HasPrefix(m[2], "/v3/{project_id}") {
				out = append(out, routeOf(s, ""))
			}
			return true
		})
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// routeOf is a mux pattern as openapi.json names its route: an exact path ("/v3/{$}") without
// its {$}, and a pattern of any method ("/{$}") with the method it was asked for.
func routeOf(pattern, method string) string {
	pattern = strings.TrimSuffix(pattern, "{$}")
	if strings.HasPrefix(pattern, "/") && method != "" {
		pattern = method + " " + pattern
	}
	return pattern
}

type openAPI struct {
	OpenAPI    string                                `json:"openapi"`
	Paths      map[string]map[string]json.RawMessage `json:"paths"`
	Components struct {
		Parameters map[string]parameter `json:"parameters"`
	} `json:"components"`
}

type parameter struct {
	Ref      string `json:"$ref"`
	Name     string `json:"name"`
	In       string `json:"in"`
	Required bool   `json:"required"`
}

type operation struct {
	OperationID string                     `json:"operationId"`
	Parameters  []parameter                `json:"parameters"`
	Responses   map[string]json.RawMessage `json:"responses"`
}

var pathParam = regexp.MustCompile(`\{([^}]+)\}`)

// The document describes exactly the routes the gateway serves: every documented operation is
// routed by Handler's mux to the pattern of the same method and path, and every route pattern of
// the package's sources is documented.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc openAPI
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi version %q, want 3.x", doc.OpenAPI)
	}
	mux := (&Gateway{}).routes()
	var documented []string
	ids := map[string]string{}
	for path, item := range doc.Paths {
		var shared []parameter
		if raw, ok := item["parameters"]; ok {
			if err := json.Unmarshal(raw, &shared); err != nil {
				t.Fatalf("%s parameters: %v", path, err)
			}
		}
		for method, raw := range item {
			if method == "parameters" || method == "summary" || method == "description" {
				continue
			}
			route := strings.ToUpper(method) + " " + path
			documented = append(documented, route)
			var op operation
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatalf("%s: %v", route, err)
			}
			if op.OperationID == "" || len(op.Responses) == 0 {
				t.Errorf("%s: needs an operationId and responses", route)
			}
			if other, dup := ids[op.OperationID]; dup {
				t.Errorf("operationId %s is used by %s and %s", op.OperationID, other, route)
			}
			ids[op.OperationID] = route
			// Every {name} of the path is a declared, required path parameter.
			for _, m := range pathParam.FindAllStringSubmatch(path, -1) {
				found := false
				for _, p := range slices.Concat(shared, op.Parameters) {
					if p.Ref != "" {
						p = doc.Components.Parameters[strings.TrimPrefix(p.Ref, "#/components/parameters/")]
					}
					found = found || (p.Name == m[1] && p.In == "path" && p.Required)
				}
				if !found {
					t.Errorf("%s: path parameter %s is not declared", route, m[1])
				}
			}
		}
	}
	slices.Sort(documented)
	served := sourceRoutes(t)
	if len(served) < 10 {
		t.Fatalf("found only %d route patterns in the sources: %v", len(served), served)
	}

	for _, route := range slices.Concat(documented, served) {
		method, path, _ := strings.Cut(route, " ")
		req := httptest.NewRequest(method, pathParam.ReplaceAllString(path, "x1"), nil)
		if _, pattern := mux.Handler(req); routeOf(pattern, method) != route {
			t.Errorf("%s is routed to %q, want its own pattern: documented but not served, or shadowed", route, pattern)
		}
	}
	for _, r := range served {
		if !slices.Contains(documented, r) {
			t.Errorf("route %s is served but not in openapi.json", r)
		}
	}
	for _, r := range documented {
		if !slices.Contains(served, r) {
			t.Errorf("openapi.json documents %s, which no route pattern of the sources registers", r)
		}
	}
}

// Every $ref of the document points at something that exists.
func TestOpenAPIRefsResolve(t *testing.T) {
	var doc any
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatal(err)
	}
	var walk func(v any, at string)
	walk = func(v any, at string) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				if ref, ok := c.(string); k == "$ref" && ok {
					if !resolves(doc, ref) {
						t.Errorf("%s: $ref %s does not resolve", at, ref)
					}
					continue
				}
				walk(c, at+"/"+k)
			}
		case []any:
			for i, c := range v {
				walk(c, at+"/"+strconv.Itoa(i))
			}
		}
	}
	walk(doc, "#")
}

func resolves(doc any, ref string) bool {
	rest, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return false
	}
	cur := doc
	for _, part := range strings.Split(rest, "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = m[part]; !ok {
			return false
		}
	}
	return true
}

// GET /openapi.json serves the document without a token; the rest of the API still needs one.
func TestOpenAPIServedWithoutAuth(t *testing.T) {
	srv := httptest.NewServer((&Gateway{Tokens: map[string]string{"t": "p"}}).Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /openapi.json: HTTP %d, %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	onDisk, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(body, onDisk) {
		t.Fatal("GET /openapi.json does not serve openapi.json")
	}
	resp, err = http.Get(srv.URL + "/v1/volumes")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /v1/volumes without a token: HTTP %d, want 401", resp.StatusCode)
	}
}
