package starter

import (
	"crypto/subtle"
	"net/http"
)

// RoleAdmin is the role of operators: the third column of a tokens-file line, as Keystone
// names the role.
const RoleAdmin = "admin"

// isAdminRequest reports whether the request carries an operator's token in its headers
// (Authorization: Bearer or X-Auth-Token; never a cookie or a query parameter, which end up
// in logs and browser history). It is the one place that decides what only operators see.
func (g *Gateway) isAdminRequest(r *http.Request) bool {
	tok := requestToken(r)
	if tok == "" {
		return false
	}
	admin := false
	for _, t := range g.AdminTokens {
		// Every token is compared, so the time taken does not tell which one matched.
		if subtle.ConstantTimeCompare([]byte(t), []byte(tok)) == 1 {
			admin = true
		}
	}
	return admin
}
