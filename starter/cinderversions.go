package starter

import (
	"context"
	"fmt"
	"mime"
	"net/http"
	"regexp"
	"strconv"
	"strings"
)

// Cinder's microversions: a client asks for one with "OpenStack-API-Version: volume X.Y" and the
// answer says which one it got.
const (
	// APIVersionHeader is the microversion header of a request and of its answer.
	APIVersionHeader = "OpenStack-API-Version"
	// LegacyAPIVersionHeader is the header older clients send instead (just "X.Y"). Cinder itself
	// reads only APIVersionHeader; imagevol reads either, APIVersionHeader first, and answers
	// in the one the request used too.
	LegacyAPIVersionHeader = "X-OpenStack-Volume-API-Version"
	// volumeService is the service type a microversion header names.
	volumeService = "volume"
)

// The microversions imagevol serves. Each microversion after 3.0 changes what Cinder answers on
// a route imagevol serves, or adds routes: 3.2 and 3.4 change the filters of volume lists, 3.48
// adds shared_targets and service_uuid to a volume, 3.61 cluster_name, 3.63 volume_type_id, 3.65
// consumes_quota, and so on (Cinder's REST API version history). imagevol shows a volume
// as 3.0 does and filters lists by name and status only, so it claims no more than 3.0: a client
// that wants a later microversion is refused (406) rather than given a 3.0 answer it would read
// as the later one. Raise maxAPIVersion only together with what the new version changes.
var (
	minAPIVersion = apiVersion{3, 0}
	maxAPIVersion = apiVersion{3, 0}
)

// versionsUpdated is the "updated" date of the version document: when imagevol's v3 API last
// changed what it serves.
const versionsUpdated = "2026-12-05T00:00:00Z"

// apiVersion is a microversion, major.minor.
type apiVersion struct{ Major, Minor int }

func (v apiVersion) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

func (v apiVersion) less(o apiVersion) bool {
	return v.Major < o.Major || (v.Major == o.Major && v.Minor < o.Minor)
}

// versionForm is a microversion as Cinder accepts it: no sign, no leading zeros, no spaces.
var versionForm = regexp.MustCompile(`^([1-9][0-9]*)\.(0|[1-9][0-9]*)$`)

// parseAPIVersion reads "X.Y", or "latest" (the highest served).
func parseAPIVersion(s string) (apiVersion, error) {
	if strings.EqualFold(s, "latest") {
		return maxAPIVersion, nil
	}
	m := versionForm.FindStringSubmatch(s)
	if m == nil {
		return apiVersion{}, fmt.Errorf("invalid API version %q: want major.minor, e.g. 3.0, or latest", s)
	}
	major, err1 := strconv.Atoi(m[1])
	minor, err2 := strconv.Atoi(m[2])
	if err1 != nil || err2 != nil {
		return apiVersion{}, fmt.Errorf("invalid API version %q", s)
	}
	return apiVersion{major, minor}, nil
}

// requestedVersion is the microversion r asks for, and whether it asked in the legacy header:
// 3.0 when it names none, as in Cinder. Asking for one that is not served is an error in Cinder's
// terms: 400 for a malformed version, 406 for one outside [minAPIVersion, maxAPIVersion].
func requestedVersion(r *http.Request) (apiVersion, bool, *APIError) {
	text, legacy := "", false
	// "OpenStack-API-Version: volume 3.0, compute 2.1": the entry of the volume service; a
	// header naming only other services names no version of this one.
	for _, h := range r.Header.Values(APIVersionHeader) {
		for _, entry := range strings.Split(h, ",") {
			if f := strings.Fields(entry); len(f) > 0 && strings.EqualFold(f[0], volumeService) {
				if len(f) != 2 {
					return apiVersion{}, false, apiErr(http.StatusBadRequest, "invalid_api_version",
						"invalid %s %q: want \"volume X.Y\"", APIVersionHeader, strings.TrimSpace(entry))
				}
				text = f[1]
				break
			}
		}
		if text != "" {
			break
		}
	}
	if text == "" {
		if text = strings.TrimSpace(r.Header.Get(LegacyAPIVersionHeader)); text == "" {
			return minAPIVersion, false, nil
		}
		legacy = true
	}
	v, err := parseAPIVersion(text)
	if err != nil {
		return apiVersion{}, legacy, apiErr(http.StatusBadRequest, "invalid_api_version", "%v", err)
	}
	if v.less(minAPIVersion) || maxAPIVersion.less(v) {
		return apiVersion{}, legacy, apiErr(http.StatusNotAcceptable, "api_version_not_supported",
			"Version %s is not supported by the API. Minimum is %s and maximum is %s.", v, minAPIVersion, maxAPIVersion)
	}
	return v, legacy, nil
}

type apiVersionKey struct{}

// apiVersionOf is the microversion a /v3 request is served at (minAPIVersion outside one).
func apiVersionOf(ctx context.Context) apiVersion {
	if v, ok := ctx.Value(apiVersionKey{}).(apiVersion); ok {
		return v
	}
	return minAPIVersion
}

// negotiateVersion reads the microversion r asks for and names it in the answer, as Cinder does
// on every /v3 route; a version that is not served is answered here, in Cinder's error shape,
// and ok is false.
func negotiateVersion(w http.ResponseWriter, r *http.Request) (*http.Request, bool) {
	v, legacy, ae := requestedVersion(r)
	if ae != nil {
		writeCinderError(w, ae)
		return r, false
	}
	h := w.Header()
	h.Set(APIVersionHeader, volumeService+" "+v.String())
	h.Add("Vary", APIVersionHeader)
	if legacy {
		h.Set(LegacyAPIVersionHeader, v.String())
		h.Add("Vary", LegacyAPIVersionHeader)
	}
	return r.WithContext(context.WithValue(r.Context(), apiVersionKey{}, v)), true
}

// CinderVersion is one API version in Cinder's version document.
type CinderVersion struct {
	ID         string            `json:"id"`
	Status     string            `json:"status"`
	Version    string            `json:"version"`
	MinVersion string            `json:"min_version"`
	Updated    string            `json:"updated"`
	Links      []CinderDocLink   `json:"links"`
	MediaTypes []CinderMediaType `json:"media-types"`
}

// CinderDocLink is a link of the version document.
type CinderDocLink struct {
	Href string `json:"href"`
	Rel  string `json:"rel"`
	Type string `json:"type,omitempty"`
}

// CinderMediaType is a media type a version speaks.
type CinderMediaType struct {
	Base string `json:"base"`
	Type string `json:"type"`
}

// CinderVersions is Cinder's version document: {"versions":[...]}, with v3 the only version.
type CinderVersions struct {
	Versions []CinderVersion `json:"versions"`
}

// baseURL is the gateway's address as the client reached it: the scheme a proxy in front says
// (X-Forwarded-Proto), else the connection's, and the request's Host.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := strings.ToLower(strings.TrimSpace(strings.Split(r.Header.Get("X-Forwarded-Proto"), ",")[0])); p == "http" || p == "https" {
		scheme = p
	}
	return scheme + "://" + r.Host
}

// cinderVersions is the version document for r.
func cinderVersions(r *http.Request) CinderVersions {
	return CinderVersions{Versions: []CinderVersion{{
		ID: "v3.0", Status: "CURRENT", Version: maxAPIVersion.String(), MinVersion: minAPIVersion.String(),
		Updated: versionsUpdated,
		Links: []CinderDocLink{
			{Href: "https://docs.openstack.org/", Rel: "describedby", Type: "text/html"},
			{Href: baseURL(r) + "/v3/", Rel: "self"},
		},
		MediaTypes: []CinderMediaType{{Base: "application/json", Type: "application/vnd.openstack.volume+json;version=3"}},
	}}}
}

// cinderVersionRoutes serves version discovery without a token, as OpenStack clients read it
// before they authenticate: "/" (statusPage, for API clients) and /v3/, which in Cinder answers
// the same document, with 200 rather than 300 Multiple Choices, and honours microversions as the
// other /v3 routes do.
func (g *Gateway) cinderVersionRoutes(mux *http.ServeMux) {
	g.public(mux, "GET /v3/{$}", serveV3Versions)
	g.public(mux, "GET /v3", serveV3Versions)
}

func serveV3Versions(w http.ResponseWriter, r *http.Request) {
	r, ok := negotiateVersion(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, cinderVersions(r))
}

// serveRootVersions answers "/" to an API client: the version document, with 300 Multiple
// Choices as Cinder answers it (cinderclient and keystoneauth read the body whatever the status).
func serveRootVersions(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusMultipleChoices, cinderVersions(r))
}

// prefersHTML says whether a request's Accept header prefers a web page to JSON: a browser's
// does (text/html, then */* with a lower q); an API client's names JSON, */* alone, or nothing.
// text/html beats */* of the same q, being the more specific, and ties with JSON go to JSON.
func prefersHTML(accept string) bool {
	var qHTML, qJSON, qAny float64
	for _, part := range strings.Split(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		q := 1.0
		if s, ok := params["q"]; ok {
			if q, err = strconv.ParseFloat(s, 64); err != nil || q < 0 || q > 1 {
				continue
			}
		}
		switch {
		case mt == "text/html" || mt == "application/xhtml+xml" || mt == "text/*":
			qHTML = max(qHTML, q)
		case mt == "application/json" || strings.HasSuffix(mt, "+json"):
			qJSON = max(qJSON, q)
		case mt == "*/*" || mt == "application/*":
			qAny = max(qAny, q)
		}
	}
	return qHTML > 0 && qHTML > qJSON && qHTML >= qAny
}
