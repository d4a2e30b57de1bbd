package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagevol/imagevol/config"
	"github.com/imagevol/imagevol/starter"
)

// The tokens file's third column is the token's role, member when left out; IMAGEVOL_TOKEN's
// role is IMAGEVOL_TOKEN_ROLE, admin when unset.
func TestLoadTokens(t *testing.T) {
	cases := []struct {
		file, envRole string
		want          map[string]starter.Role // nil: an error
	}{
		{"a p1\nb p2 reader\nc p3 admin\nd p4 member\n# comment\n\n", "", map[string]starter.Role{"a": starter.RoleMember, "b": starter.RoleReader,
			"c": starter.RoleAdmin, "d": starter.RoleMember, "env-tok": starter.RoleAdmin}},
		{"a p1 _member_\n", "reader", map[string]starter.Role{"a": starter.RoleMember, "env-tok": starter.RoleReader}},
		{"a p1 root\n", "", nil},
		{"a\n", "", nil},
		{"a p1 admin extra\n", "", nil},
		{"", "superuser", nil},
	}
	for _, c := range cases {
		path := filepath.Join(t.TempDir(), "tokens")
		if err := os.WriteFile(path, []byte(c.file), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("IMAGEVOL_TOKEN", "env-tok")
		t.Setenv("IMAGEVOL_PROJECT", "env-project")
		t.Setenv("IMAGEVOL_TOKEN_ROLE", c.envRole)
		tokens, roles, err := loadTokens(path)
		if c.want == nil {
			if err == nil {
				t.Errorf("tokens %q, role %q: no error", c.file, c.envRole)
			}
			continue
		}
		if err != nil || len(roles) != len(c.want) || tokens["env-tok"] != "env-project" {
			t.Errorf("tokens %q: %v %v, %v", c.file, tokens, roles, err)
			continue
		}
		for tok, r := range c.want {
			if roles[tok] != r || tokens[tok] == "" {
				t.Errorf("tokens %q: %s has role %s, want %s", c.file, tok, roles[tok], r)
			}
		}
	}
}

func TestGatewayQuotas(t *testing.T) {
	projects, err := config.ParseQuotas("demo=3,ops=gigabytes:-1,big=volumes:-1:gigabytes:50")
	if err != nil {
		t.Fatal(err)
	}
	q := gatewayQuotas(projects, config.QuotaLimits{Volumes: 10, Gigabytes: 1000})
	want := map[string]starter.QuotaLimits{
		"demo": {Volumes: 3, Gigabytes: 1000}, "ops": {Volumes: 10, Gigabytes: -1}, "big": {Volumes: -1, Gigabytes: 50},
		"unlisted": {Volumes: 10, Gigabytes: 1000},
	}
	for p, l := range want {
		if got := q.For(p); got != l {
			t.Errorf("%s: %+v, want %+v", p, got, l)
		}
	}
	t.Setenv("IMAGEVOL_CONFIG", "")
	fs := flag.NewFlagSet("imagevol-gateway", flag.ContinueOnError)
	if _, err := config.Load(fs, []string{"--default-quota-volumes", "-2"}, "gateway"); err == nil || !strings.Contains(err.Error(), "--default-quota-volumes") {
		t.Errorf("a default of -2: %v", err)
	}
}
