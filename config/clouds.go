package config

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
	"gopkg.in/yaml.v3"
)

// CloudAuth is one clouds.yaml cloud's credentials, as gophercloud's clouds package reads
// them (a secure.yaml beside the file merged in).
type CloudAuth struct {
	File       string // the clouds.yaml it came from
	AuthURL    string // Keystone
	RegionName string
	options    gophercloud.AuthOptions
}

// AuthOptions are the cloud's Keystone v3 options, re-authenticating when the token expires
// (a worker outlives any token).
func (a CloudAuth) AuthOptions() gophercloud.AuthOptions {
	o := a.options
	o.AllowReauth = true
	return o
}

// cloudsSearchPath is where clouds.yaml is looked for when no file is given, in order.
func cloudsSearchPath() []string {
	var paths []string
	if p := Env("OS_CLIENT_CONFIG_FILE", ""); p != "" {
		paths = append(paths, p)
	}
	paths = append(paths, "clouds.yaml")
	if home, err := os.UserHomeDir(); err == nil {
		paths = append(paths, filepath.Join(home, ".config", "openstack", "clouds.yaml"))
	}
	return append(paths, "/etc/openstack/clouds.yaml")
}

// loadCloud reads the cloud name from the clouds.yaml at path (empty: the first of
// cloudsSearchPath) and checks it has what Keystone v3 needs.
func loadCloud(name, path string) (*CloudAuth, error) {
	candidates := []string{path}
	if path == "" {
		candidates = cloudsSearchPath()
	}
	var data []byte
	err := errors.New("none")
	for _, p := range candidates {
		if data, err = os.ReadFile(p); err == nil {
			path = p
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("no clouds.yaml (looked at %s)", strings.Join(candidates, ", "))
	}
	// Which clouds there are and their auth_type, which Parse does not return.
	var all clouds.Clouds
	if err := yaml.Unmarshal(data, &all); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c, ok := all.Clouds[name]
	if !ok {
		return nil, fmt.Errorf("%s has no cloud %q", path, name)
	}
	o, _, _, err := clouds.Parse(clouds.WithCloudName(name), clouds.WithLocations(path))
	if err != nil {
		return nil, fmt.Errorf("%s: cloud %s: %w", path, name, err)
	}
	field := func(f string) string { return fmt.Sprintf("%s: clouds.%s.auth.%s", path, name, f) }
	if u, err := url.Parse(o.IdentityEndpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("%s: want the Keystone URL", field("auth_url"))
	}
	switch c.AuthType {
	case "", clouds.AuthPassword, clouds.AuthV3Password:
		if o.Username == "" && o.UserID == "" {
			return nil, fmt.Errorf("%s or user_id: needed for password auth", field("username"))
		}
		if o.Password == "" {
			return nil, fmt.Errorf("%s: needed for password auth", field("password"))
		}
		if o.Username != "" && o.DomainName == "" && o.DomainID == "" {
			return nil, fmt.Errorf("%s or user_domain_id: Keystone v3 needs the user's domain with a user name", field("user_domain_name"))
		}
		if s := o.Scope; s == nil || (s.ProjectName == "" && s.ProjectID == "") {
			return nil, fmt.Errorf("%s or project_id: a project to scope the token to", field("project_name"))
		}
		if s := o.Scope; s.ProjectID == "" && s.DomainName == "" && s.DomainID == "" {
			return nil, fmt.Errorf("%s or project_domain_id: Keystone v3 needs the project's domain with a project name", field("project_domain_name"))
		}
	case clouds.AuthV3ApplicationCredential:
		if o.ApplicationCredentialSecret == "" {
			return nil, fmt.Errorf("%s: needed for application credential auth", field("application_credential_secret"))
		}
		if o.ApplicationCredentialID == "" && (o.ApplicationCredentialName == "" || (o.Username == "" && o.UserID == "")) {
			return nil, fmt.Errorf("%s (or application_credential_name with username or user_id): needed for application credential auth", field("application_credential_id"))
		}
		// Application credentials carry their own scope; Keystone refuses another one.
		o.Scope, o.TenantID, o.TenantName = nil, "", ""
	case clouds.AuthToken, clouds.AuthV3Token:
		if o.TokenID == "" {
			return nil, fmt.Errorf("%s: needed for token auth", field("token"))
		}
	default:
		return nil, fmt.Errorf("%s: clouds.%s.auth_type %q: want password, v3applicationcredential or token", path, name, c.AuthType)
	}
	return &CloudAuth{File: path, AuthURL: o.IdentityEndpoint, RegionName: c.RegionName, options: o}, nil
}
