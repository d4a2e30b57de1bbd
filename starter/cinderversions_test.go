package starter

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestPrefersHTML(t *testing.T) {
	for accept, want := range map[string]bool{
		"":                                      false, // python-requests' default is */*; some clients send none
		"*/*":                                   false,
		"application/json":                      false,
		"application/vnd.openstack.volume+json": false,
		"application/json, */*":                 false,
		"text/html, application/json":           false, // a tie goes to JSON
		"application/json;q=0.5, text/html":     true,
		"text/html":                             true,
		"text/html, */*":                        true, // the more specific wins at equal q
		"text/html;q=0.1, */*":                  false,
		"text/html;q=0":                         false,
		"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8": true, // Chromium
		"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8":                       true, // Firefox
		"not a media type": false,
	} {
		if got := prefersHTML(accept); got != want {
			t.Errorf("prefersHTML(%q) = %v, want %v", accept, got, want)
		}
	}
}

// get sends a GET to srv with headers, and returns the answer and its body.
func get(t *testing.T, srv *httptest.Server, path string, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

// checkVersions parses a version document and checks it is Cinder's, with v3 at base.
func checkVersions(t *testing.T, body []byte, base string) {
	t.Helper()
	var doc struct {
		Versions []map[string]json.RawMessage `json:"versions"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || len(doc.Versions) != 1 {
		t.Fatalf("version document %s: %v", body, err)
	}
	v := doc.Versions[0]
	for _, k := range []string{"id", "status", "version", "min_version", "updated", "links", "media-types"} {
		if _, ok := v[k]; !ok {
			t.Errorf("version has no %s: %s", k, body)
		}
	}
	var all CinderVersions
	if err := json.Unmarshal(body, &all); err != nil {
		t.Fatal(err)
	}
	parsed := all.Versions[0]
	if parsed.ID != "v3.0" || parsed.Status != "CURRENT" || parsed.MinVersion != "3.0" || parsed.Version != maxAPIVersion.String() || parsed.Updated == "" {
		t.Errorf("version %+v", parsed)
	}
	self := ""
	for _, l := range parsed.Links {
		if l.Rel == "self" {
			self = l.Href
		}
	}
	if self != base+"/v3/" {
		t.Errorf("self link %q, want %q", self, base+"/v3/")
	}
	if len(parsed.MediaTypes) != 1 || parsed.MediaTypes[0].Base != "application/json" {
		t.Errorf("media-types %+v", parsed.MediaTypes)
	}
}

// "/" answers API clients Cinder's version document with 300, browsers the status page; /v3/ and
// /v3 answer the document with 200. None needs a token, not even one Keystone would refuse.
func TestVersionDiscovery(t *testing.T) {
	g, _ := policyGateway(t)
	g.TokenValidator = validatorFunc(func(context.Context, string) (Identity, error) {
		return Identity{}, apiErr(http.StatusUnauthorized, "unauthorized", "refused")
	})
	srv := httptest.NewServer(g.Handler())
	defer srv.Close()
	cases := []struct {
		name, path string
		header     map[string]string
		status     int
		html       bool
	}{
		{"no Accept", "/", nil, http.StatusMultipleChoices, false},
		{"JSON", "/", map[string]string{"Accept": "application/json"}, http.StatusMultipleChoices, false},
		{"anything", "/", map[string]string{"Accept": "*/*"}, http.StatusMultipleChoices, false},
		{"a browser", "/", map[string]string{"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}, http.StatusOK, true},
		{"a refused token", "/", map[string]string{"X-Auth-Token": "bogus"}, http.StatusMultipleChoices, false},
		{"v3", "/v3/", nil, http.StatusOK, false},
		{"v3 without the slash", "/v3", nil, http.StatusOK, false},
		{"v3 with a refused token", "/v3/", map[string]string{"X-Auth-Token": "bogus"}, http.StatusOK, false},
		{"v3 with a browser's Accept", "/v3/", map[string]string{"Accept": "text/html"}, http.StatusOK, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := get(t, srv, c.path, c.header)
			if resp.StatusCode != c.status {
				t.Fatalf("GET %s: HTTP %d %s, want %d", c.path, resp.StatusCode, body, c.status)
			}
			ct := resp.Header.Get("Content-Type")
			if c.html {
				if !strings.HasPrefix(ct, "text/html") {
					t.Fatalf("Content-Type %q, want the status page", ct)
				}
			} else {
				if ct != "application/json" {
					t.Fatalf("Content-Type %q, want application/json", ct)
				}
				checkVersions(t, body, srv.URL)
			}
			if c.path == "/" && !strings.Contains(strings.Join(resp.Header.Values("Vary"), ","), "Accept") {
				t.Errorf("Vary %v: the answer depends on Accept", resp.Header.Values("Vary"))
			}
			if c.path != "/" && resp.Header.Get(APIVersionHeader) != "volume 3.0" {
				t.Errorf("%s %q, want volume 3.0", APIVersionHeader, resp.Header.Get(APIVersionHeader))
			}
		})
	}
}

// The links follow the scheme a proxy in front says it was reached by, and the request's host.
func TestVersionLinksBehindProxy(t *testing.T) {
	for _, c := range []struct {
		proto string
		tls   bool
		want  string
	}{
		{"", false, "http://volumes.example:8776"},
		{"", true, "https://volumes.example:8776"},
		{"https", false, "https://volumes.example:8776"},
		{"https, http", false, "https://volumes.example:8776"},
		{"gopher", false, "http://volumes.example:8776"},
	} {
		r := httptest.NewRequest(http.MethodGet, "http://volumes.example:8776/", nil)
		if c.tls {
			r = httptest.NewRequest(http.MethodGet, "https://volumes.example:8776/", nil)
		}
		if c.proto != "" {
			r.Header.Set("X-Forwarded-Proto", c.proto)
		}
		rec := httptest.NewRecorder()
		serveRootVersions(rec, r)
		checkVersions(t, rec.Body.Bytes(), c.want)
	}
}

func TestParseAPIVersion(t *testing.T) {
	for in, want := range map[string]string{"3.0": "3.0", "3.10": "3.10", "latest": maxAPIVersion.String(), "LATEST": maxAPIVersion.String(), "2.0": "2.0", "4.0": "4.0"} {
		v, err := parseAPIVersion(in)
		if err != nil || v.String() != want {
			t.Errorf("parseAPIVersion(%q) = %v, %v; want %s", in, v, err, want)
		}
	}
	for _, in := range []string{"", "3", "3.", ".0", "03.0", "3.00", "3.01", "v3.0", "3.0.1", "-3.0", "3,0", " 3.0", "three"} {
		if v, err := parseAPIVersion(in); err == nil {
			t.Errorf("parseAPIVersion(%q) = %v, want an error", in, v)
		}
	}
}

// Every /v3 route reads the microversion and names the one used in its answer; a malformed one is
// 400 badRequest and one outside the served range 406, in Cinder's error shape, as Cinder answers.
func TestMicroversions(t *testing.T) {
	g, tokens := policyGateway(t)
	srv := httptest.NewServer(g.Handler())
	defer srv.Close()
	cases := []struct {
		name          string
		header        map[string]string
		status        int
		fault         string // the error object's name, when refused
		used          string // OpenStack-API-Version of the answer
		legacy        string // X-OpenStack-Volume-API-Version of the answer
		varyHasLegacy bool
	}{
		{"none", nil, http.StatusOK, "", "volume 3.0", "", false},
		{"3.0", map[string]string{APIVersionHeader: "volume 3.0"}, http.StatusOK, "", "volume 3.0", "", false},
		{"latest", map[string]string{APIVersionHeader: "volume latest"}, http.StatusOK, "", "volume " + maxAPIVersion.String(), "", false},
		{"among other services", map[string]string{APIVersionHeader: "compute 2.90, volume 3.0"}, http.StatusOK, "", "volume 3.0", "", false},
		{"another service only", map[string]string{APIVersionHeader: "compute 2.90"}, http.StatusOK, "", "volume 3.0", "", false},
		{"legacy", map[string]string{LegacyAPIVersionHeader: "3.0"}, http.StatusOK, "", "volume 3.0", "3.0", true},
		{"legacy latest", map[string]string{LegacyAPIVersionHeader: "latest"}, http.StatusOK, "", "volume 3.0", "3.0", true},
		{"both: the current header wins", map[string]string{APIVersionHeader: "volume 3.0", LegacyAPIVersionHeader: "9.9"}, http.StatusOK, "", "volume 3.0", "", false},
		{"malformed", map[string]string{APIVersionHeader: "volume 3.x"}, http.StatusBadRequest, "badRequest", "", "", false},
		{"no version", map[string]string{APIVersionHeader: "volume"}, http.StatusBadRequest, "badRequest", "", "", false},
		{"legacy malformed", map[string]string{LegacyAPIVersionHeader: "three"}, http.StatusBadRequest, "badRequest", "", "", false},
		{"too high", map[string]string{APIVersionHeader: "volume 3.1"}, http.StatusNotAcceptable, "computeFault", "", "", false},
		{"much too high", map[string]string{APIVersionHeader: "volume 4.0"}, http.StatusNotAcceptable, "computeFault", "", "", false},
		{"too low", map[string]string{APIVersionHeader: "volume 2.0"}, http.StatusNotAcceptable, "computeFault", "", "", false},
		{"legacy too high", map[string]string{LegacyAPIVersionHeader: "3.70"}, http.StatusNotAcceptable, "computeFault", "", "", false},
	}
	for _, path := range []string{"/v3/p/volumes/detail", "/v3/", "/v3/p/no-such-thing"} {
		for _, c := range cases {
			t.Run(path+" "+c.name, func(t *testing.T) {
				header := map[string]string{"X-Auth-Token": tokens[RoleReader]}
				for k, v := range c.header {
					header[k] = v
				}
				resp, body := get(t, srv, path, header)
				status := c.status
				if status == http.StatusOK && strings.Contains(path, "no-such-thing") {
					status = http.StatusNotFound
				}
				if resp.StatusCode != status {
					t.Fatalf("HTTP %d %s, want %d", resp.StatusCode, body, status)
				}
				if c.fault != "" {
					var f map[string]CinderFault
					if err := json.Unmarshal(body, &f); err != nil || f[c.fault].Code != c.status || f[c.fault].Message == "" {
						t.Fatalf("body %s, want {%q:{\"code\":%d,...}}", body, c.fault, c.status)
					}
					return
				}
				if got := resp.Header.Get(APIVersionHeader); got != c.used {
					t.Errorf("%s %q, want %q", APIVersionHeader, got, c.used)
				}
				if got := resp.Header.Get(LegacyAPIVersionHeader); got != c.legacy {
					t.Errorf("%s %q, want %q", LegacyAPIVersionHeader, got, c.legacy)
				}
				vary := strings.Join(resp.Header.Values("Vary"), ",")
				if !strings.Contains(vary, APIVersionHeader) || strings.Contains(vary, LegacyAPIVersionHeader) != c.varyHasLegacy {
					t.Errorf("Vary %q", vary)
				}
			})
		}
	}
}

// Without a token a /v3 route is 401, whatever the microversion: Cinder authenticates first.
func TestMicroversionAfterAuthentication(t *testing.T) {
	g, _ := policyGateway(t)
	srv := httptest.NewServer(g.Handler())
	defer srv.Close()
	resp, body := get(t, srv, "/v3/p/volumes/detail", map[string]string{APIVersionHeader: "volume 9.9"})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("HTTP %d %s, want 401", resp.StatusCode, body)
	}
}
