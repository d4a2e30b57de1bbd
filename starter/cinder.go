package starter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/imagevol/imagevol/models"
)

// CinderStatusDownloading is the status Cinder shows while a volume's image is being downloaded;
// imagevol reports it for a volume still creating whose provision downloads the image.
const CinderStatusDownloading = "downloading"

// cinderTime is how Cinder's v3 API writes timestamps: UTC, microseconds, no zone.
const cinderTime = "2006-01-02T15:04:05.000000"

// cinderRoutes serves the Cinder v3-compatible subset of the API: create a volume from an image,
// show, list and delete volumes of the token's project, under /v3/{project_id}/, with Cinder's
// bodies and error shapes so that OpenStack clients (gophercloud, openstackclient) work
// unchanged. Version discovery and microversions are in cinderversions.go.
func (g *Gateway) cinderRoutes(mux *http.ServeMux) {
	g.cinderHandle(mux, "POST /v3/{project_id}/volumes", g.cinderCreate)
	g.cinderHandle(mux, "GET /v3/{project_id}/volumes", g.cinderListSummary)
	g.cinderHandle(mux, "GET /v3/{project_id}/volumes/detail", g.cinderList)
	g.cinderHandle(mux, "GET /v3/{project_id}/volumes/{id}", g.cinderGet)
	g.cinderHandle(mux, "DELETE /v3/{project_id}/volumes/{id}", g.cinderDelete)
	g.cinderHandle(mux, "POST /v3/{project_id}/volumes/{id}/action", g.cinderAction)
	g.cinderHandle(mux, "/v3/", g.unrouted(mux, "/v3/", writeCinderError))
}

// cinderHandle is handle for the Cinder API: cinderAuth instead of auth.
func (g *Gateway) cinderHandle(mux *http.ServeMux, pattern string, next func(http.ResponseWriter, *http.Request)) {
	if _, ok := policy[pattern]; !ok {
		panic("starter: route " + pattern + " has no policy")
	}
	mux.Handle(pattern, g.cinderAuth(pattern, next))
}

// cinderAuth is auth with Cinder's error shape; a project in the path that is not the token's
// is not found, as Cinder answers for a project the caller cannot see, before the role is
// checked.
func (g *Gateway) cinderAuth(pattern string, next func(http.ResponseWriter, *http.Request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := g.identity(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", "Bearer")
			writeCinderError(w, apiErr(http.StatusUnauthorized, "unauthorized", "The request you have made requires authentication."))
			return
		}
		// Cinder reads the microversion after authentication and before anything else.
		r, ok = negotiateVersion(w, r)
		if !ok {
			return
		}
		if p := r.PathValue("project_id"); p != "" && p != id.Project {
			writeCinderError(w, apiErr(http.StatusNotFound, "project_not_found", "project %s not found", p))
			return
		}
		if !allowed(pattern, id.Role) {
			writeCinderError(w, forbidden(id, pattern))
			return
		}
		next(w, r.WithContext(withIdentity(r.Context(), id)))
	})
}

// cinderFaults are Cinder's names for the error object of each status (its wsgi Fault names).
var cinderFaults = map[int]string{
	http.StatusBadRequest:            "badRequest",
	http.StatusUnauthorized:          "unauthorized",
	http.StatusForbidden:             "forbidden",
	http.StatusNotFound:              "itemNotFound",
	http.StatusMethodNotAllowed:      "badMethod",
	http.StatusConflict:              "conflictingRequest",
	http.StatusRequestEntityTooLarge: "overLimit",
	http.StatusTooManyRequests:       "overLimit",
	http.StatusUnsupportedMediaType:  "badMediaType",
	http.StatusNotImplemented:        "notImplemented",
	http.StatusServiceUnavailable:    "serviceUnavailable",
}

// CinderFault is the body of a failed Cinder request, under its fault name, e.g.
// {"itemNotFound":{"message":"...","code":404}}.
type CinderFault struct {
	Message string `json:"message"`
	Code    int    `json:"code"`
}

// writeCinderError is writeError in Cinder's shape.
func writeCinderError(w http.ResponseWriter, err error) {
	var ae *APIError
	if !errors.As(err, &ae) {
		ae = apiErr(http.StatusInternalServerError, "internal", "%v", err)
	}
	name, ok := cinderFaults[ae.Status]
	if !ok {
		name = "computeFault"
	}
	writeJSON(w, ae.Status, map[string]CinderFault{name: {Message: ae.Message, Code: ae.Status}})
}

// CinderVolume is a volume as Cinder's v3 API shows it: the fields gophercloud's and
// openstackclient's volume types read, with the values Cinder gives a volume made from an image.
type CinderVolume struct {
	ID                  string            `json:"id"`
	Name                string            `json:"name"`
	Description         *string           `json:"description"`
	Status              string            `json:"status"`
	Size                int               `json:"size"`
	AvailabilityZone    string            `json:"availability_zone"`
	CreatedAt           string            `json:"created_at"`
	UpdatedAt           string            `json:"updated_at"`
	Attachments         []any             `json:"attachments"`
	VolumeType          string            `json:"volume_type"`
	SnapshotID          *string           `json:"snapshot_id"`
	SourceVolID         *string           `json:"source_volid"`
	Metadata            map[string]string `json:"metadata"`
	UserID              string            `json:"user_id"`
	Bootable            string            `json:"bootable"`
	Encrypted           bool              `json:"encrypted"`
	ReplicationStatus   *string           `json:"replication_status"`
	ConsistencyGroupID  *string           `json:"consistencygroup_id"`
	Multiattach         bool              `json:"multiattach"`
	VolumeImageMetadata map[string]string `json:"volume_image_metadata"`
	Host                *string           `json:"os-vol-host-attr:host,omitempty"` // admins only, as in Cinder
	TenantID            string            `json:"os-vol-tenant-attr:tenant_id"`
	Links               []CinderLink      `json:"links"`
}

// CinderLink is one of a resource's links.
type CinderLink struct {
	Href string `json:"href"`
	Rel  string `json:"rel"`
}

// cinderStatus maps a volume's status to Cinder's, which shows a download apart from the rest of
// creating. A volume records "miss" once its cache fill is done and "not_cached" before it
// downloads on its own; a hit records nothing until it is available.
func cinderStatus(v *models.Volume) string {
	if v.Status == models.StatusCreating && (v.Cache == models.CacheMiss || v.Cache == models.CacheNotCached) {
		return CinderStatusDownloading
	}
	return v.Status
}

func cinderViewOf(r *http.Request, v *models.Volume) CinderVolume {
	host := ""
	if v.Host != "" {
		// Cinder's host@backend#pool.
		host = v.Host + "@rbd"
		if v.Pool != "" {
			host += "#" + v.Pool
		}
	}
	self := baseURL(r) + "/v3/" + v.ProjectID + "/volumes/" + v.ID
	cv := CinderVolume{
		ID: v.ID, Name: v.Name, Status: cinderStatus(v), Size: v.SizeGB, AvailabilityZone: "nova",
		CreatedAt: v.CreatedAt.UTC().Format(cinderTime), UpdatedAt: v.UpdatedAt.UTC().Format(cinderTime),
		Attachments: []any{}, VolumeType: "__DEFAULT__", Metadata: map[string]string{}, UserID: v.UserID,
		Bootable: "false", VolumeImageMetadata: v.ImageMetadata,
		TenantID: v.ProjectID,
		Links:    []CinderLink{{Href: self, Rel: "self"}},
	}
	if v.ImageID != "" {
		cv.Bootable = "true"
		if len(cv.VolumeImageMetadata) == 0 {
			// A volume created before its image's metadata was recorded.
			cv.VolumeImageMetadata = map[string]string{"image_id": v.ImageID}
		}
	}
	if isAdmin(r) {
		cv.Host = &host
	}
	return cv
}

// cinderCreate serves POST /v3/{project_id}/volumes: a volume from an image (imageRef), which is
// the only source imagevol makes volumes from.
func (g *Gateway) cinderCreate(w http.ResponseWriter, r *http.Request) {
	req, err := decodeCinderCreate(r.Body)
	if err == nil {
		var v *models.Volume
		if v, err = g.createFrom(r.Context(), projectOf(r), req); err == nil {
			writeJSON(w, http.StatusAccepted, map[string]CinderVolume{"volume": cinderViewOf(r, v)})
			return
		}
	}
	writeCinderError(w, err)
}

// decodeCinderCreate reads Cinder's create body. Fields imagevol cannot honour (another source,
// a volume type, metadata...) are refused unless empty, rather than silently dropped: clients
// such as openstackclient send them as null.
func decodeCinderCreate(body io.Reader) (CreateVolumeRequest, error) {
	var req CreateVolumeRequest
	bad := func(format string, args ...any) (CreateVolumeRequest, error) {
		return req, apiErr(http.StatusBadRequest, "bad_request", "Invalid input received: "+format, args...)
	}
	var top map[string]json.RawMessage
	if err := json.NewDecoder(io.LimitReader(body, maxBody)).Decode(&top); err != nil {
		return bad("malformed request body: %v", err)
	}
	var vol map[string]json.RawMessage
	if raw, ok := top["volume"]; !ok || json.Unmarshal(raw, &vol) != nil || vol == nil {
		return bad("the body must be {\"volume\": {...}}")
	}
	delete(top, "volume")
	if k := firstSet(top); k != "" {
		return bad("%s is not supported", k)
	}
	if raw, ok := vol["name"]; ok && !isEmptyJSON(raw) {
		if err := json.Unmarshal(raw, &req.Name); err != nil {
			return bad("name must be a string")
		}
	}
	if raw, ok := vol["imageRef"]; ok && !isEmptyJSON(raw) {
		if err := json.Unmarshal(raw, &req.ImageID); err != nil {
			return bad("imageRef must be a string")
		}
	}
	if req.ImageID == "" {
		return bad("imageRef is required: imagevol makes volumes from images only")
	}
	size, err := cinderSize(vol["size"])
	if err != nil {
		return bad("%v", err)
	}
	req.SizeGB = size
	if raw, ok := vol["availability_zone"]; ok && !isEmptyJSON(raw) {
		var az string
		if json.Unmarshal(raw, &az) != nil || az != "nova" {
			return bad("availability zone %s is invalid", raw)
		}
	}
	for _, k := range []string{"name", "imageRef", "size", "availability_zone"} {
		delete(vol, k)
	}
	if k := firstSet(vol); k != "" {
		return bad("%s is not supported", k)
	}
	return req, nil
}

// cinderSize reads a volume size as Cinder accepts it: a whole number of GiB, as a JSON integer
// or a string of digits, greater than 0.
func cinderSize(raw json.RawMessage) (int, error) {
	if isEmptyJSON(raw) {
		return 0, errors.New("size is required")
	}
	text := string(raw)
	var s string
	if json.Unmarshal(raw, &s) == nil {
		text = s
	}
	n, err := strconv.Atoi(text)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("size must be an integer greater than 0, got %s", raw)
	}
	return n, nil
}

// firstSet names a field of obj that is not empty, or "" if all are.
func firstSet(obj map[string]json.RawMessage) string {
	for k, v := range obj {
		if !isEmptyJSON(v) {
			return k
		}
	}
	return ""
}

// isEmptyJSON says whether a JSON value is absent, null, false, "", {} or [].
func isEmptyJSON(raw json.RawMessage) bool {
	switch string(bytes.Join(bytes.Fields(raw), nil)) {
	case "", "null", "false", `""`, "{}", "[]":
		return true
	}
	return false
}

// cinderGet serves GET /v3/{project_id}/volumes/{id}.
func (g *Gateway) cinderGet(w http.ResponseWriter, r *http.Request) {
	v, err := g.ownVolume(r)
	if err != nil {
		writeCinderError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]CinderVolume{"volume": cinderViewOf(r, v)})
}

// cinderList serves GET /v3/{project_id}/volumes/detail: the project's volumes in full, a page
// at a time (see cinderPage).
func (g *Gateway) cinderList(w http.ResponseWriter, r *http.Request) {
	vs, links, err := g.cinderPage(r)
	if err != nil {
		writeCinderError(w, err)
		return
	}
	out := make([]CinderVolume, 0, len(vs))
	for i := range vs {
		out = append(out, cinderViewOf(r, &vs[i]))
	}
	writeJSON(w, http.StatusOK, cinderVolumeList[CinderVolume]{Volumes: out, Links: links})
}

// CinderVolumeSummary is a volume as Cinder's plain list (GET /v3/{project_id}/volumes) shows it.
type CinderVolumeSummary struct {
	ID    string       `json:"id"`
	Name  string       `json:"name"`
	Links []CinderLink `json:"links"`
}

// cinderListSummary serves GET /v3/{project_id}/volumes: the project's volumes by ID and name,
// a page at a time, as cinderList.
func (g *Gateway) cinderListSummary(w http.ResponseWriter, r *http.Request) {
	vs, links, err := g.cinderPage(r)
	if err != nil {
		writeCinderError(w, err)
		return
	}
	out := make([]CinderVolumeSummary, 0, len(vs))
	for i := range vs {
		v := &vs[i]
		out = append(out, CinderVolumeSummary{ID: v.ID, Name: v.Name, Links: []CinderLink{
			{Href: baseURL(r) + "/v3/" + v.ProjectID + "/volumes/" + v.ID, Rel: "self"},
			{Href: baseURL(r) + "/" + v.ProjectID + "/volumes/" + v.ID, Rel: "bookmark"},
		}})
	}
	writeJSON(w, http.StatusOK, cinderVolumeList[CinderVolumeSummary]{Volumes: out, Links: links})
}

// cinderVolumeList is the body of a volume list: volumes_links only when there is a next page.
type cinderVolumeList[T any] struct {
	Volumes []T          `json:"volumes"`
	Links   []CinderLink `json:"volumes_links,omitempty"`
}

// cinderMaxLimit is the most volumes a list answers at once, Cinder's osapi_max_limit default.
const cinderMaxLimit = 1000

// cinderPage reads the page of the project's volumes a Cinder list asks for: filtered by name
// and status (Cinder's statuses), ordered by sort (key[:dir],...) or the legacy sort_key and
// sort_dir (created_at:desc by default), from after marker (a volume ID), at most limit (1000
// at most). A full page links to the next one: the same query with the page's last volume as
// marker.
func (g *Gateway) cinderPage(r *http.Request) ([]models.Volume, []CinderLink, error) {
	q := r.URL.Query()
	bad := func(format string, args ...any) error {
		return apiErr(http.StatusBadRequest, "bad_request", "Invalid input received: "+format, args...)
	}
	query := models.VolumeQuery{ProjectID: projectOf(r), Name: q.Get("name"), Status: q.Get("status"),
		Marker: q.Get("marker"), Limit: cinderMaxLimit}
	if q.Has("limit") {
		n, err := strconv.Atoi(q.Get("limit"))
		if err != nil || n < 0 {
			return nil, nil, bad("limit must be an integer 0 or greater, got %q", q.Get("limit"))
		}
		query.Limit = min(n, cinderMaxLimit)
		if n == 0 {
			return []models.Volume{}, nil, nil
		}
	}
	sort, err := cinderSort(q)
	if err != nil {
		return nil, nil, bad("%v", err)
	}
	query.Sort = sort
	vs, err := g.Store.QueryVolumes(r.Context(), query)
	if errors.Is(err, models.ErrNotFound) {
		return nil, nil, apiErr(http.StatusBadRequest, "bad_request", "Marker %s could not be found.", query.Marker)
	}
	if err != nil || len(vs) < query.Limit {
		return vs, nil, err
	}
	q.Set("marker", vs[len(vs)-1].ID)
	next := baseURL(r) + r.URL.Path + "?" + q.Encode()
	return vs, []CinderLink{{Href: next, Rel: "next"}}, nil
}

// cinderSort reads a list's order: sort=key[:dir],... or the legacy sort_key and sort_dir (not
// both), each key one of models.VolumeSortKeys, each direction asc or desc (desc by default).
func cinderSort(q url.Values) ([]models.SortKey, error) {
	var keys []models.SortKey
	add := func(key, dir string) error {
		key = strings.TrimSpace(key)
		if !slices.Contains(models.VolumeSortKeys, key) {
			return fmt.Errorf("sort key %q is not one of %v", key, models.VolumeSortKeys)
		}
		switch strings.ToLower(strings.TrimSpace(dir)) {
		case "", "desc":
			keys = append(keys, models.SortKey{Key: key, Desc: true})
		case "asc":
			keys = append(keys, models.SortKey{Key: key})
		default:
			return fmt.Errorf("sort direction %q is not asc or desc", dir)
		}
		return nil
	}
	if q.Has("sort") {
		if q.Has("sort_key") || q.Has("sort_dir") {
			return nil, errors.New("the sort parameter cannot be used with sort_key or sort_dir")
		}
		for _, part := range strings.Split(q.Get("sort"), ",") {
			key, dir, _ := strings.Cut(part, ":")
			if err := add(key, dir); err != nil {
				return nil, err
			}
		}
		return keys, nil
	}
	if q.Has("sort_key") || q.Has("sort_dir") {
		key := q.Get("sort_key")
		if key == "" {
			key = "created_at"
		}
		if err := add(key, q.Get("sort_dir")); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// cinderDelete serves DELETE /v3/{project_id}/volumes/{id} through DELETE /v1's handler, so the
// two cannot drift apart: it only rewrites the answer in Cinder's shape (202 without a body).
func (g *Gateway) cinderDelete(w http.ResponseWriter, r *http.Request) {
	// Cinder refuses to delete a volume still creating (its force-delete action is not served
	// here); /v1 cancels the provision instead.
	if v, err := g.ownVolume(r); err == nil && v.Status == models.StatusCreating {
		writeCinderError(w, apiErr(http.StatusConflict, "volume_busy", "volume %s is still being created", v.ID))
		return
	}
	rec := &recorder{header: http.Header{}}
	g.deleteVolume(rec, r)
	if rec.status == http.StatusAccepted {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	var body struct {
		Error *APIError `json:"error"`
	}
	if err := json.Unmarshal(rec.body.Bytes(), &body); err != nil || body.Error == nil {
		body.Error = apiErr(http.StatusInternalServerError, "internal", "%s", bytes.TrimSpace(rec.body.Bytes()))
	}
	body.Error.Status = rec.status
	writeCinderError(w, body.Error)
}

// recorder is the http.ResponseWriter of a handler whose answer is rewritten before it is sent.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (c *recorder) Header() http.Header { return c.header }

func (c *recorder) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	return c.body.Write(b)
}

func (c *recorder) WriteHeader(status int) {
	if c.status == 0 {
		c.status = status
	}
}

// unrouted answers what no pattern of mux claims under prefix, with the API's own error shape
// rather than the mux's plain text: 405 and the allowed methods when the path exists with other
// methods, else 404.
func (g *Gateway) unrouted(mux *http.ServeMux, prefix string, write func(http.ResponseWriter, error)) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		var allowed []string
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "" && pattern != prefix {
				allowed = append(allowed, m)
			}
		}
		if len(allowed) > 0 {
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			write(w, apiErr(http.StatusMethodNotAllowed, "method_not_allowed", "%s is not allowed on %s; allowed: %v", r.Method, r.URL.Path, allowed))
			return
		}
		write(w, apiErr(http.StatusNotFound, "not_found", "no such resource: %s %s", r.Method, r.URL.Path))
	}
}
