package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A cloud of clouds.yaml is enough: imagevolctl authenticates with Keystone, finds the gateway
// as the catalog's block-storage endpoint and sends the token Keystone issued.
func TestCloudFromCloudsYAML(t *testing.T) {
	const token = "keystone-issued-token"
	var gotToken string
	gateway := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/volumes" {
			http.NotFound(w, r)
			return
		}
		gotToken = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"volumes":[{"id":"v1","name":"from-cloud","status":"available"}]}`)
	}))
	defer gateway.Close()
	keystone := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v3/auth/tokens" {
			http.NotFound(w, r)
			return
		}
		var body struct {
			Auth struct {
				Identity struct {
					Password struct {
						User struct {
							Name     string `json:"name"`
							Password string `json:"password"`
						} `json:"user"`
					} `json:"password"`
				} `json:"identity"`
			} `json:"auth"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Auth.Identity.Password.User.Password != "secret" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("X-Subject-Token", token)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"token":{"expires_at":"2099-01-01T00:00:00.000000Z","project":{"id":"p1","name":"demo"},
			"catalog":[{"type":"block-storage","name":"imagevol","endpoints":[
				{"interface":"public","region":"RegionOne","region_id":"RegionOne","url":"%s/v3/p1"}]}]}}`, gateway.URL)
	}))
	defer keystone.Close()

	dir := t.TempDir()
	cloudsYAML := fmt.Sprintf(`clouds:
  mycloud:
    auth:
      auth_url: %s/v3
      username: alice
      password: secret
      project_name: demo
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
`, keystone.URL)
	if err := os.WriteFile(filepath.Join(dir, "clouds.yaml"), []byte(cloudsYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("OS_CLIENT_CONFIG_FILE", filepath.Join(dir, "clouds.yaml"))
	t.Setenv("OS_CLOUD", "mycloud")
	t.Setenv("IMAGEVOL_TOKEN", "")
	t.Setenv("IMAGEVOL_URL", "")

	var out bytes.Buffer
	if err := run(context.Background(), []string{"-o", "json", "list"}, &out, os.Stderr); err != nil {
		t.Fatalf("list with OS_CLOUD: %v", err)
	}
	if gotToken != token {
		t.Errorf("the gateway got token %q, want Keystone's %q", gotToken, token)
	}
	if !strings.Contains(out.String(), "from-cloud") {
		t.Errorf("list printed %q", out.String())
	}

	// A wrong password is Keystone's refusal, named as the cloud's.
	bad := strings.Replace(cloudsYAML, "secret", "wrong", 1)
	if err := os.WriteFile(filepath.Join(dir, "clouds.yaml"), []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	err := run(context.Background(), []string{"list"}, &out, os.Stderr)
	if err == nil || !strings.Contains(err.Error(), `OS_CLOUD "mycloud"`) {
		t.Errorf("list with a wrong password: %v; want an error naming the cloud", err)
	}
}
