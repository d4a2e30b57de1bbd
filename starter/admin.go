package starter

import "net/http"

// isAdminRequest reports whether the request carries an operator's token (role admin) in its
// headers (Authorization: Bearer or X-Auth-Token; never a cookie or a query parameter, which end
// up in logs and browser history). It decides what only operators see on the pages served
// without a token: the status page and readiness.
func (g *Gateway) isAdminRequest(r *http.Request) bool {
	id, ok := g.identity(r)
	return ok && id.Role == RoleAdmin
}
