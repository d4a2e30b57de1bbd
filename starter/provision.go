package starter

import "net/http"

// provisionRoutes serves the retry of failed provisions.
func (g *Gateway) provisionRoutes(mux *http.ServeMux) {}
