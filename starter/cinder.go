package starter

import "net/http"

// cinderRoutes serves the Cinder v3-compatible subset of the API.
func (g *Gateway) cinderRoutes(mux *http.ServeMux) {}
