package starter

import (
	"context"
	"fmt"
	"net/http"
	"strings"
)

// Role is what a token may do, as Keystone's default roles say it: each role may do what the
// ones below it may.
type Role int

// Roles, weakest first. RoleNone is a token with none of the roles imagevol knows: it
// authenticates but may do nothing.
const (
	RoleNone Role = iota
	RoleReader
	RoleMember
	RoleAdmin
)

// String is the role's Keystone name.
func (r Role) String() string {
	switch r {
	case RoleReader:
		return "reader"
	case RoleMember:
		return "member"
	case RoleAdmin:
		return "admin"
	}
	return "none"
}

// ParseRole reads a role's name: admin, member (or Keystone's legacy _member_) or reader.
func ParseRole(name string) (Role, error) {
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "admin":
		return RoleAdmin, nil
	case "member", "_member_":
		return RoleMember, nil
	case "reader":
		return RoleReader, nil
	}
	return RoleNone, fmt.Errorf("role %q: want admin, member or reader", name)
}

// roleOfNames is the strongest role among a Keystone token's role names; names imagevol does
// not know (service, say) grant nothing. Keystone lists implied roles too (admin implies member
// implies reader), but taking the strongest does not depend on that.
func roleOfNames(names []string) Role {
	best := RoleNone
	for _, n := range names {
		if r, err := ParseRole(n); err == nil && r > best {
			best = r
		}
	}
	return best
}

// Identity is who a request acts as: a project, with a role in it.
type Identity struct {
	Project string
	Role    Role
}

// Error codes of a refused request.
const (
	CodeForbidden = "forbidden" // 403: the token's role does not allow the request
)

// policy is imagevol's policy: for every authenticated route (a pattern of the gateway's mux),
// the weakest role allowed on it. It follows Cinder's defaults: readers of a project read its
// volumes, members also create, retry and delete them, and the cache and the reconcile
// reports, which span every project, are for admins. A route missing here is not served
// (Handler panics), so a new route cannot be left open by mistake.
var policy = map[string]Role{
	"POST /v1/volumes":                          RoleMember,
	"GET /v1/volumes":                           RoleReader,
	"GET /v1/volumes/{id}":                      RoleReader,
	"DELETE /v1/volumes/{id}":                   RoleMember,
	"POST /v1/volumes/{id}/retry":               RoleMember,
	"POST /v1/volumes/{id}/extend":              RoleMember,
	"GET /v1/cache":                             RoleAdmin,
	"GET /v1/cache/stats":                       RoleAdmin,
	"POST /v1/cache/warm":                       RoleAdmin,
	"POST /v1/cache/{id}/pin":                   RoleAdmin,
	"DELETE /v1/cache/{id}/pin":                 RoleAdmin,
	"DELETE /v1/cache/{id}":                     RoleAdmin,
	"GET /v1/reconcile/last":                    RoleAdmin,
	"POST /v3/{project_id}/volumes":             RoleMember,
	"GET /v3/{project_id}/volumes":              RoleReader,
	"GET /v3/{project_id}/volumes/detail":       RoleReader,
	"GET /v3/{project_id}/volumes/{id}":         RoleReader,
	"DELETE /v3/{project_id}/volumes/{id}":      RoleMember,
	"POST /v3/{project_id}/volumes/{id}/action": RoleMember,
	// What no other pattern claims answers 404 or 405 in the API's shape, to any role.
	"/v1/": RoleNone,
	"/v3/": RoleNone,
}

// publicRoutes are the routes served without a token: probes, metrics, the OpenAPI document,
// the status page and Cinder's version discovery, which clients read before they authenticate.
// A route is either here or in policy (public and handle check it).
var publicRoutes = map[string]bool{
	"GET /healthz":      true,
	"GET /readyz":       true,
	"GET /openapi.json": true,
	"GET /metrics":      true,
	"/{$}":              true,
	"GET /v3/{$}":       true,
	"GET /v3":           true,
}

// allowed says whether role may use the route of pattern; a pattern not in policy is refused.
func allowed(pattern string, role Role) bool {
	min, ok := policy[pattern]
	return ok && role >= min
}

// forbidden is the answer to a request the token's role does not allow.
func forbidden(id Identity, pattern string) *APIError {
	return apiErr(http.StatusForbidden, CodeForbidden, "role %s of project %s may not %s (needs %s)",
		id.Role, id.Project, pattern, policy[pattern])
}

type identityKey struct{}

func withIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// identityOf is the identity auth put in the request's context.
func identityOf(r *http.Request) Identity {
	id, _ := r.Context().Value(identityKey{}).(Identity)
	return id
}

func projectOf(r *http.Request) string { return identityOf(r).Project }

// isAdmin says whether the request acts as an admin: only admins see where a volume is
// (its host), as Cinder's policy shows os-vol-host-attr:host to admins only.
func isAdmin(r *http.Request) bool { return identityOf(r).Role == RoleAdmin }
