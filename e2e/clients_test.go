//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/endpoints"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/regions"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/services"

	"github.com/imagevol/imagevol/starter"
)

// osCLI is one OpenStack command-line client (Debian's `cinder` or `openstack`) set up to act
// for one project: its global options and the only environment it gets.
type osCLI struct {
	bin  string   // "cinder" or "openstack"
	args []string // global options, before the command
	env  []string // the whole environment of the process
}

// osResult is one run of a client.
type osResult struct {
	stdout, stderr string
	exit           int
}

func (r osResult) output() string { return r.stdout + r.stderr }

// run runs the client with args, bounded by a timeout, and logs what it printed.
func (c osCLI) run(t *testing.T, args ...string) osResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	all := append(append([]string{}, c.args...), args...)
	cmd := exec.CommandContext(ctx, c.bin, all...)
	cmd.Env = c.env
	// openstacksdk also reads ./clouds.yaml: run where there is none
	cmd.Dir = homeOf(c.env)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	res := osResult{stdout: out.String(), stderr: errOut.String()}
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("%s %s: no answer in 90 s\nstdout: %s\nstderr: %s", c.bin, strings.Join(args, " "), res.stdout, res.stderr)
	case errors.As(err, &exit):
		res.exit = exit.ExitCode()
	case err != nil:
		t.Fatalf("%s %v: %v", c.bin, args, err)
	}
	t.Logf("%s %s → exit %d\nstdout: %s\nstderr: %s", c.bin, strings.Join(args, " "), res.exit, res.stdout, res.stderr)
	return res
}

// ok runs the client and fails the test unless it exits 0.
func (c osCLI) ok(t *testing.T, args ...string) osResult {
	t.Helper()
	r := c.run(t, args...)
	if r.exit != 0 {
		t.Fatalf("%s %s: exit %d: %s", c.bin, strings.Join(args, " "), r.exit, r.output())
	}
	return r
}

func homeOf(env []string) string {
	for _, kv := range env {
		if h, ok := strings.CutPrefix(kv, "HOME="); ok {
			return h
		}
	}
	return ""
}

// cliEnv is a clean environment for a client: a PATH, a home of its own (no clouds.yaml, no
// cache of the developer's) and the given OS_* variables, nothing else.
func cliEnv(t *testing.T, osVars map[string]string) []string {
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir(), "LANG=C.UTF-8", "PYTHONNOUSERSITE=1"}
	for k, v := range osVars {
		env = append(env, k+"="+v)
	}
	return env
}

// tableRows reads the rows of a prettytable as cinderclient prints them: each line "| a | b |"
// as its trimmed cells, header and separators left out.
func tableRows(out string) [][]string {
	var rows [][]string
	header := true
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") {
			continue
		}
		if header { // the first row of cells names the columns
			header = false
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		rows = append(rows, cells)
	}
	return rows
}

// properties reads a Property/Value table (cinder show, cinder create) into a map; continuation
// lines of wrapped values (an empty property) are left out.
func properties(out string) map[string]string {
	m := map[string]string{}
	for _, r := range tableRows(out) {
		if len(r) == 2 && r[0] != "" {
			m[r[0]] = r[1]
		}
	}
	return m
}

// volumeView is what the test reads back of a volume, whichever client showed it.
type volumeView struct {
	id, status string
	size       int
}

// volumeOps are the steps the test takes, in each client's own commands.
type volumeOps struct {
	create func(t *testing.T, image, name string) string
	show   func(t *testing.T, id string) (volumeView, osResult)
	listed func(t *testing.T, id string) bool
	extend func(t *testing.T, id string, size int)
	delete func(t *testing.T, id string)
}

func cinderOps(c osCLI) volumeOps {
	return volumeOps{
		create: func(t *testing.T, image, name string) string {
			p := properties(c.ok(t, "create", "--image", image, "--name", name, "1").stdout)
			if p["id"] == "" {
				t.Fatalf("cinder create printed no id: %v", p)
			}
			return p["id"]
		},
		show: func(t *testing.T, id string) (volumeView, osResult) {
			r := c.run(t, "show", id)
			if r.exit != 0 {
				return volumeView{}, r
			}
			p := properties(r.stdout)
			size, err := strconv.Atoi(p["size"])
			if err != nil || p["id"] != id {
				t.Fatalf("cinder show %s: id %q, size %q (%v): %s", id, p["id"], p["size"], err, r.stdout)
			}
			return volumeView{id: p["id"], status: p["status"], size: size}, r
		},
		listed: func(t *testing.T, id string) bool {
			for _, row := range tableRows(c.ok(t, "list").stdout) {
				if len(row) > 0 && row[0] == id {
					return true
				}
			}
			return false
		},
		extend: func(t *testing.T, id string, size int) { c.ok(t, "extend", id, strconv.Itoa(size)) },
		delete: func(t *testing.T, id string) { c.ok(t, "delete", id) },
	}
}

func openstackOps(c osCLI) volumeOps {
	return volumeOps{
		create: func(t *testing.T, image, name string) string {
			var v struct{ ID string }
			out := c.ok(t, "volume", "create", "--image", image, "--size", "1", "-f", "json", name).stdout
			if err := json.Unmarshal([]byte(out), &v); err != nil || v.ID == "" {
				t.Fatalf("openstack volume create: %v: %s", err, out)
			}
			return v.ID
		},
		show: func(t *testing.T, id string) (volumeView, osResult) {
			r := c.run(t, "volume", "show", "-f", "json", id)
			if r.exit != 0 {
				return volumeView{}, r
			}
			var v struct {
				ID, Status string
				Size       int
			}
			if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v.ID != id {
				t.Fatalf("openstack volume show %s: %v: %s", id, err, r.stdout)
			}
			return volumeView{id: v.ID, status: v.Status, size: v.Size}, r
		},
		listed: func(t *testing.T, id string) bool {
			var vs []struct{ ID string }
			out := c.ok(t, "volume", "list", "-f", "json").stdout
			if err := json.Unmarshal([]byte(out), &vs); err != nil {
				t.Fatalf("openstack volume list: %v: %s", err, out)
			}
			for _, v := range vs {
				if v.ID == id {
					return true
				}
			}
			return false
		},
		extend: func(t *testing.T, id string, size int) {
			c.ok(t, "volume", "set", "--size", strconv.Itoa(size), id)
		},
		delete: func(t *testing.T, id string) { c.ok(t, "volume", "delete", id) },
	}
}

// notFound is how both clients report a volume the project cannot see: cinderclient's and
// openstackclient's "No volume with a name or ID of ... exists." after the 404, or the 404 itself.
var notFound = regexp.MustCompile(`(?i)no volume with a name or id of|not found|\(HTTP 404\)`)

// refused is an answer that would mean the gateway refused the token rather than hid the volume.
var refused = regexp.MustCompile(`\(HTTP 40[13]\)|(?i)unauthorized|forbidden`)

// registerVolumeService puts the gateway at base into the Keystone catalog as the block-storage
// service (types block-storage and volumev3, Cinder's URL template), with Glance beside it, in
// a region of the test's own, so that deploy/keystone.sh's RegionOne is left as it is. Everything
// it adds is removed when the test ends. It returns the region.
func registerVolumeService(t *testing.T, e keystoneEnv, base string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, admin := ksToken(t, e, "admin", e.adminPW, projectScope("admin"))
	region := "e2e-clients-" + uuid.NewString()[:8]
	if _, err := regions.Create(ctx, admin, regions.CreateOpts{ID: region, Description: "imagevol e2e: OpenStack clients"}).Extract(); err != nil {
		t.Fatalf("create region %s: %v", region, err)
	}
	var endpointIDs []string
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, id := range endpointIDs {
			if err := endpoints.Delete(ctx, admin, id).ExtractErr(); err != nil {
				t.Errorf("remove endpoint %s: %v", id, err)
			}
		}
		if err := regions.Delete(ctx, admin, region).ExtractErr(); err != nil {
			t.Errorf("remove region %s: %v", region, err)
		}
	})
	glanceURL := os.Getenv("GLANCE_URL")
	if glanceURL == "" {
		t.Fatal("GLANCE_URL is not set")
	}
	for _, s := range []struct{ typ, name, url string }{
		{"block-storage", "cinderv3", base + "/v3/%(project_id)s"},
		{"volumev3", "cinderv3", base + "/v3/%(project_id)s"},
		{"image", "glance", glanceURL},
	} {
		id := serviceID(ctx, t, admin, s.typ, s.name)
		ep, err := endpoints.Create(ctx, admin, endpoints.CreateOpts{
			Availability: gophercloud.AvailabilityPublic, Region: region, URL: s.url, ServiceID: id}).Extract()
		if err != nil {
			t.Fatalf("create %s endpoint: %v", s.typ, err)
		}
		endpointIDs = append(endpointIDs, ep.ID)
	}
	return region
}

// serviceID finds the catalog's service of type typ, or creates it (and removes it at the end).
func serviceID(ctx context.Context, t *testing.T, admin *gophercloud.ServiceClient, typ, name string) string {
	t.Helper()
	pages, err := services.List(admin, services.ListOpts{ServiceType: typ}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found, err := services.ExtractServices(pages)
	if err != nil {
		t.Fatal(err)
	}
	if len(found) > 0 {
		return found[0].ID
	}
	s, err := services.Create(ctx, admin, services.CreateOpts{Type: typ, Name: name, Description: "imagevol e2e"}).Extract()
	if err != nil {
		t.Fatalf("create service %s: %v", typ, err)
	}
	t.Cleanup(func() { _ = services.Delete(context.Background(), admin, s.ID).ExtractErr() })
	return s.ID
}

// TestOpenStackClients drives Debian's cinderclient (`cinder`) and openstackclient (`openstack`),
// unchanged, against a gateway validating Keystone tokens: each creates a volume from an image,
// shows it until available, finds it in the list, extends it from 1 to 2 GiB, deletes it and
// sees it gone; once with a password through the Keystone catalog, once with a token and the
// endpoint given (admin_token). Another project's token is told the volume does not exist.
func TestOpenStackClients(t *testing.T) {
	e := needKeystone(t)
	for _, bin := range []string{"cinder", "openstack"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found (deploy/install-deps.sh clients installs Debian's clients): %v", bin, err)
		}
	}
	f := loadKeystoneConfig(t, e, 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	v, err := starter.NewKeystoneValidator(ctx, starter.KeystoneOptions{
		Auth: f.Gateway.Keystone.Auth.AuthOptions(), CacheTTL: 30 * time.Second, Timeout: f.Gateway.Keystone.Timeout})
	if err != nil {
		t.Fatal(err)
	}
	host := "e2e-clients"
	startHost(t, hostConfig(host))
	base := ksGateway(t, v, stack.glance, host)
	region := registerVolumeService(t, e, base)
	img := uploadImage(t, "clients", "raw", imageBytes(8*mib, 73, 2))
	demoTok, _ := ksToken(t, e, "demo", e.demoPW, projectScope(e.demoProjectName))
	otherTok, _ := ksToken(t, e, "other", e.otherPW, projectScope(e.otherProjectName))

	// password: the clients authenticate at Keystone and find the gateway in the catalog.
	password := func(bin, user, pw, project string) osCLI {
		return osCLI{bin: bin, env: cliEnv(t, map[string]string{
			"OS_AUTH_URL": e.url, "OS_IDENTITY_API_VERSION": "3", "OS_USERNAME": user, "OS_PASSWORD": pw,
			"OS_PROJECT_NAME": project, "OS_USER_DOMAIN_NAME": "Default", "OS_PROJECT_DOMAIN_NAME": "Default",
			"OS_REGION_NAME": region, "OS_INTERFACE": "public", "OS_VOLUME_API_VERSION": "3"})}
	}
	// admin_token: a token and the project's endpoint on the command line, no Keystone asked by
	// the client. openstackclient looks the image up in Glance before it creates a volume from
	// it, at the one endpoint admin_token knows (which it takes for an image API v3, from its
	// path) unless a cloud of clouds.yaml gives openstacksdk Glance's endpoint: the variable
	// OS_IMAGE_ENDPOINT_OVERRIDE is not read.
	cloudsFile := filepath.Join(t.TempDir(), "clouds.yaml")
	if err := os.WriteFile(cloudsFile, []byte(fmt.Sprintf("clouds:\n  glance:\n    image_endpoint_override: %s\n",
		os.Getenv("GLANCE_URL"))), 0o600); err != nil {
		t.Fatal(err)
	}
	token := func(bin, tok, project string) osCLI {
		endpoint := base + "/v3/" + project
		if bin == "cinder" {
			return osCLI{bin: bin, env: cliEnv(t, map[string]string{"OS_VOLUME_API_VERSION": "3"}), args: []string{
				"--os-auth-type", "admin_token", "--os-token", tok, "--os-project-id", project, "--os-endpoint", endpoint}}
		}
		return osCLI{bin: bin, env: cliEnv(t, map[string]string{"OS_CLIENT_CONFIG_FILE": cloudsFile}),
			args: []string{"--os-cloud", "glance", "--os-auth-type", "admin_token", "--os-endpoint", endpoint,
				"--os-token", tok, "--os-volume-api-version", "3"}}
	}
	ops := map[string]func(osCLI) volumeOps{"cinder": cinderOps, "openstack": openstackOps}

	for _, bin := range []string{"cinder", "openstack"} {
		for _, mode := range []string{"keystone", "admin_token"} {
			t.Run(bin+"/"+mode, func(t *testing.T) {
				demo, other := password(bin, "demo", e.demoPW, e.demoProjectName), password(bin, "other", e.otherPW, e.otherProjectName)
				if mode == "admin_token" {
					demo, other = token(bin, demoTok, e.demoProject), token(bin, otherTok, e.otherProject)
				}
				clientSteps(t, bin, ops[bin](demo), ops[bin](other), img.ID)
			})
		}
	}
}

// clientSteps takes a volume through its life with one client as demo, and checks that other
// does not see it.
func clientSteps(t *testing.T, bin string, demo, other volumeOps, imageID string) {
	name := fmt.Sprintf("%s-%s", bin, uuid.NewString()[:8])
	id := demo.create(t, imageID, name)
	waitStatus := func(what string, ok func(volumeView) bool) volumeView {
		t.Helper()
		for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Second) {
			v, r := demo.show(t, id)
			if r.exit != 0 {
				t.Fatalf("%s show %s: exit %d: %s", bin, id, r.exit, r.output())
			}
			if ok(v) {
				return v
			}
			if v.status == "error" || v.status == "error_extending" || time.Now().After(deadline) {
				t.Fatalf("volume %s %s (size %d), waiting for %s", id, v.status, v.size, what)
			}
		}
	}
	v := waitStatus("available", func(v volumeView) bool { return v.status == "available" })
	if v.size != 1 {
		t.Errorf("available volume of %d GiB, want 1", v.size)
	}
	if !demo.listed(t, id) {
		t.Errorf("%s list lacks volume %s", bin, id)
	}

	// Another project: the volume does not exist for it, and its list lacks it.
	_, r := other.show(t, id)
	if r.exit == 0 || !notFound.MatchString(r.output()) || refused.MatchString(r.output()) {
		t.Errorf("%s show %s as another project: exit %d: %s; want not found", bin, id, r.exit, r.output())
	}
	if other.listed(t, id) {
		t.Errorf("another project's %s list shows volume %s", bin, id)
	}

	demo.extend(t, id, 2)
	waitStatus("size 2 and available", func(v volumeView) bool { return v.status == "available" && v.size == 2 })

	demo.delete(t, id)
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Second) {
		v, r := demo.show(t, id)
		if r.exit != 0 {
			if !notFound.MatchString(r.output()) {
				t.Fatalf("%s show %s after delete: exit %d: %s; want not found", bin, id, r.exit, r.output())
			}
			break
		}
		if v.status != "deleting" || time.Now().After(deadline) {
			t.Fatalf("volume %s %s after delete", id, v.status)
		}
	}
	if demo.listed(t, id) {
		t.Errorf("%s list still shows deleted volume %s", bin, id)
	}
}
