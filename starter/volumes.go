package starter

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/imagesource"
	"github.com/imagevol/imagevol/models"
)

// CreateVolumeRequest is the body of POST /v1/volumes.
type CreateVolumeRequest struct {
	ImageID string `json:"image_id"`
	SizeGB  int    `json:"size_gb"`
	Name    string `json:"name"`
	// Host, when set, places the volume on that storage host instead of letting the gateway
	// choose.
	Host string `json:"host,omitempty"`
}

// VolumeView is a volume as the API shows it.
type VolumeView struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Status      string    `json:"status"`
	ImageID     string    `json:"image_id"`
	SizeGB      int       `json:"size_gb"`
	Host        string    `json:"host,omitempty"` // admins only
	Cache       string    `json:"cache,omitempty"`
	CacheReason string    `json:"cache_reason,omitempty"`
	Error       string    `json:"error,omitempty"`
	WorkflowID  string    `json:"workflow_id"`
	WorkflowURL string    `json:"workflow_url,omitempty"`
	Flatten     string    `json:"flatten,omitempty"`
	Progress    *Progress `json:"progress,omitempty"`
	// FillWorkflowID names the cache fill the volume waits on while it is created, and the fill
	// it was cloned from after (a cache miss); FillURL is that fill's Temporal UI page. Admins
	// only: a fill's ID names the Ceph cluster.
	FillWorkflowID string `json:"fill_workflow_id,omitempty"`
	FillURL        string `json:"fill_url,omitempty"`
	// WaitingFor, on a volume still creating, says what it waits for when that is not a step
	// under way: a storage host that no worker serves.
	WaitingFor string    `json:"waiting_for,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// viewFor is a volume as the request's caller may see it: its host only for admins.
func viewFor(r *http.Request, v *models.Volume) VolumeView {
	view := viewOf(v)
	if !isAdmin(r) {
		view.Host = ""
	}
	return view
}

func viewOf(v *models.Volume) VolumeView {
	return VolumeView{
		ID: v.ID, Name: v.Name, Status: v.Status, ImageID: v.ImageID, SizeGB: v.SizeGB, Host: v.Host,
		Cache: v.Cache, CacheReason: v.CacheReason, Error: v.Error, WorkflowID: v.WorkflowID, Flatten: v.Flatten,
		CreatedAt: v.CreatedAt, UpdatedAt: v.UpdatedAt,
	}
}

const maxBody = 1 << 20

func (g *Gateway) createVolume(w http.ResponseWriter, r *http.Request) {
	v, err := g.create(r.Context(), projectOf(r), r.Body)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"id": v.ID, "status": v.Status, "workflow_id": v.WorkflowID})
}

func (g *Gateway) create(ctx context.Context, project string, body io.Reader) (*models.Volume, error) {
	var req CreateVolumeRequest
	dec := json.NewDecoder(io.LimitReader(body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, apiErr(http.StatusBadRequest, "bad_request", "malformed JSON body: %v", err)
	}
	return g.createFrom(ctx, project, req)
}

// createFrom validates a request, records the volume and starts its provision.
func (g *Gateway) createFrom(ctx context.Context, project string, req CreateVolumeRequest) (*models.Volume, error) {
	if req.ImageID == "" {
		return nil, apiErr(http.StatusBadRequest, "bad_request", "image_id is required")
	}
	if err := g.checkSize(req.SizeGB); err != nil {
		return nil, err
	}
	read := time.Now().UTC()
	img, err := g.usableImage(ctx, project, req.ImageID)
	if err != nil {
		return nil, err
	}
	need := img.VirtualSize
	if need == 0 {
		need = img.Size
	}
	if models.ExceedsGiB(need, int64(req.SizeGB)) {
		return nil, apiErr(http.StatusBadRequest, "volume_too_small", "image %s needs %d GiB, size_gb is %d", img.ID, models.GiBCeil(need), req.SizeGB)
	}
	host := req.Host
	if host != "" && !slices.Contains(g.Hosts, host) {
		return nil, apiErr(http.StatusBadRequest, "unknown_host", "host %q is not one of the storage hosts %v", host, g.Hosts)
	}
	if host == "" {
		if host, err = g.place(ctx, img); err != nil {
			return nil, err
		}
	}
	id := uuid.NewString()
	v := &models.Volume{
		ID: id, ProjectID: project, Name: req.Name, SizeGB: req.SizeGB, ImageID: img.ID, Host: host,
		Status: models.StatusCreating, WorkflowID: id, ImageMetadata: imageMetadata(img),
	}
	limits := g.Quotas.For(project)
	if err := g.Store.CreateVolumeWithin(ctx, v, func(u models.ProjectUsage) error { return limits.check(project, u, int64(req.SizeGB)) }); err != nil {
		return nil, err
	}
	opts := provisionOptions(ctx, id, host)
	opts.TypedSearchAttributes = contract.ProvisionSearch(img.ID, host, project)
	_, err = g.Temporal.ExecuteWorkflow(ctx, opts, contract.CreateVolumeWorkflow, contract.CreateVolumeInput{
		VolumeID: id, ImageID: img.ID, SizeGB: req.SizeGB, Host: host, Image: &img, ImageRead: read,
		Deadline: g.deadline(read),
	})
	if err != nil {
		// Nothing was started: the row must not stay "creating" forever.
		_ = g.Store.UpdateVolume(context.WithoutCancel(ctx), id, map[string]any{"status": models.StatusError, "error": "could not start provisioning: " + err.Error()})
		return nil, apiErr(http.StatusServiceUnavailable, "temporal_unavailable", "could not start provisioning: %v", err)
	}
	g.logCtx(ctx).Info("provision started", "volume_id", id, "workflow_id", id, "image_id", img.ID, "host", host)
	return v, nil
}

// imageMetadata is what a volume records of the image it is made from, as Cinder copies it into
// volume_glance_metadata: the image's core fields and every custom property, as strings.
func imageMetadata(img imagesource.Image) map[string]string {
	md := make(map[string]string, len(img.Properties)+8)
	for k, v := range img.Properties {
		md[k] = v
	}
	md["image_id"] = img.ID
	md["image_name"] = img.Name
	md["checksum"] = img.Checksum
	md["size"] = strconv.FormatInt(img.Size, 10)
	md["disk_format"] = img.DiskFormat
	md["container_format"] = img.ContainerFormat
	md["min_disk"] = strconv.Itoa(img.MinDisk)
	md["min_ram"] = strconv.Itoa(img.MinRAM)
	return md
}

// place picks the host for a new volume: a host that already caches the image's content if one
// is configured here (its clone needs no download, and no cross-pool clone), else the next host
// in turn.
func (g *Gateway) place(ctx context.Context, img imagesource.Image) (string, error) {
	if len(g.Hosts) == 0 {
		return "", apiErr(http.StatusServiceUnavailable, "no_hosts", "no storage hosts are configured")
	}
	entries, err := g.Store.ListEntriesOfImage(ctx, img.ID)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		if e.ContentHash == img.ContentHash() && e.State == models.EntryReady && slices.Contains(g.Hosts, e.Host) {
			return e.Host, nil
		}
	}
	return g.Hosts[(g.next.Add(1)-1)%uint64(len(g.Hosts))], nil
}

// workflowURL is the Temporal UI page of a workflow, or "" without a UI address.
func (g *Gateway) workflowURL(id string) string {
	if g.UIURL == "" || id == "" {
		return ""
	}
	ns := g.Namespace
	if ns == "" {
		ns = "default"
	}
	return strings.TrimSuffix(g.UIURL, "/") + "/namespaces/" + url.PathEscape(ns) + "/workflows/" + url.PathEscape(id)
}

// ownVolume reads a volume of the caller's project; another project's volume is not found.
func (g *Gateway) ownVolume(r *http.Request) (*models.Volume, error) {
	v, err := g.Store.GetVolume(r.Context(), r.PathValue("id"))
	if errors.Is(err, models.ErrNotFound) || (err == nil && v.ProjectID != projectOf(r)) {
		return nil, apiErr(http.StatusNotFound, "volume_not_found", "volume %s not found", r.PathValue("id"))
	}
	return v, err
}

func (g *Gateway) getVolume(w http.ResponseWriter, r *http.Request) {
	v, err := g.ownVolume(r)
	if err != nil {
		writeError(w, err)
		return
	}
	view := viewFor(r, v)
	view.WorkflowURL = g.workflowURL(v.WorkflowID)
	// A fill's workflow ID names the Ceph cluster: operators only, like the host.
	admin := isAdmin(r)
	if v.Status == models.StatusCreating || v.Flatten == models.FlattenPending || v.Flatten == models.FlattenRunning {
		var fill string
		view.Progress, fill = g.progress(r.Context(), v.WorkflowID)
		if admin {
			view.FillWorkflowID = fill
		}
	} else if v.Cache == models.CacheMiss && admin {
		// Cloned from a fill's entry: its provision's memo names the fill.
		view.FillWorkflowID = g.filledBy(r.Context(), v.WorkflowID)
	}
	view.FillURL = g.workflowURL(view.FillWorkflowID)
	if v.Status == models.StatusCreating && v.Host != "" {
		view.WaitingFor = g.waitingFor(r.Context(), v.Host)
	}
	writeJSON(w, http.StatusOK, view)
}

// Progress is what a running provision is doing: its current step and, while data moves, how
// many bytes of how many are done.
type Progress struct {
	Phase      string `json:"phase"`
	BytesDone  int64  `json:"bytes_done"`
	BytesTotal int64  `json:"bytes_total"`
}

// progress reads a provision's pending step and its last heartbeat from Temporal, following a
// provision that waits on a cache fill into the fill's own steps, and names the fill it waits on
// (or, flattening, the fill it was cloned from). A read serves for progressMaxAge. It is
// best-effort and returns nil when Temporal does not answer quickly.
func (g *Gateway) progress(ctx context.Context, workflowID string) (*Progress, string) {
	now := time.Now()
	if r, ok := g.reads.get(workflowID, now); ok {
		return r.progress, r.fill
	}
	p, fill := g.readProgress(ctx, workflowID)
	if p != nil {
		g.reads.put(workflowID, progressRead{progress: p, fill: fill, at: now})
	}
	return p, fill
}

// readProgress is progress, read from Temporal.
func (g *Gateway) readProgress(ctx context.Context, workflowID string) (_ *Progress, fill string) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	p := &Progress{Phase: "starting"}
	for hop := 0; hop < 2 && workflowID != ""; hop++ {
		desc, err := g.Temporal.DescribeWorkflowExecution(ctx, workflowID, "")
		if err != nil {
			return nil, fill
		}
		workflowID = ""
		if hop == 0 {
			fill = memoString(desc, contract.MemoFilledBy)
		}
		if len(desc.GetPendingActivities()) == 0 {
			// Waiting on a fill by signal: its memo names the fill.
			if fillID := memoString(desc, contract.MemoFill); hop == 0 && fillID != "" {
				p.Phase, workflowID, fill = contract.FillWorkflow, fillID, fillID
				continue
			}
		}
		for _, pa := range desc.GetPendingActivities() {
			p.Phase = pa.GetActivityType().GetName()
			if pa.GetHeartbeatDetails() == nil {
				continue
			}
			dc := converter.GetDefaultDataConverter()
			var d contract.DownloadProgress
			var fillID string
			switch {
			case p.Phase == "JoinFill" && dc.FromPayloads(pa.GetHeartbeatDetails(), &fillID) == nil:
				workflowID = fillID
				if hop == 0 {
					fill = fillID
				}
			case dc.FromPayloads(pa.GetHeartbeatDetails(), &d) == nil:
				p.BytesDone, p.BytesTotal = d.Offset, d.Total
			}
		}
	}
	return p, fill
}

// filledBy is the fill a provision's volume was cloned from, as its memo names it; "" when the
// memo names none (runs recorded before it did) or Temporal does not answer quickly.
func (g *Gateway) filledBy(ctx context.Context, workflowID string) string {
	if workflowID == "" {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	desc, err := g.Temporal.DescribeWorkflowExecution(ctx, workflowID, "")
	if err != nil {
		return ""
	}
	return memoString(desc, contract.MemoFilledBy)
}

// memoString is a string value of a workflow's memo, "" when absent.
func memoString(desc *workflowservice.DescribeWorkflowExecutionResponse, key string) string {
	var s string
	if m := desc.GetWorkflowExecutionInfo().GetMemo().GetFields()[key]; m != nil &&
		converter.GetDefaultDataConverter().FromPayload(m, &s) == nil {
		return s
	}
	return ""
}

func (g *Gateway) listVolumes(w http.ResponseWriter, r *http.Request) {
	vs, err := g.Store.ListVolumes(r.Context(), projectOf(r))
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]VolumeView, 0, len(vs))
	for i := range vs {
		out = append(out, viewFor(r, &vs[i]))
	}
	writeJSON(w, http.StatusOK, map[string]any{"volumes": out})
}

func (g *Gateway) deleteVolume(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	for attempt := 1; ; attempt++ {
		v, err := g.ownVolume(r)
		if err != nil {
			writeError(w, err)
			return
		}
		in := contract.DeleteVolumeInput{VolumeID: v.ID, Host: v.Host, Pool: v.Pool}
		switch v.Status {
		case models.StatusCreating:
			// The deletion cancels the provision and waits for it to close, then removes
			// whatever it made, in the host's own pool while the row names none yet, and the
			// row goes.
			in.Provision = v.WorkflowID
		case models.StatusDeleting:
			writeJSON(w, http.StatusAccepted, map[string]string{"id": v.ID, "status": v.Status})
			return
		case models.StatusExtending:
			// As Cinder: a volume being extended cannot be deleted until its extension ends.
			writeError(w, apiErr(http.StatusConflict, "volume_busy", "volume %s is being extended", v.ID))
			return
		}
		// Only from the status just read: a volume that moved meanwhile (its provision ended,
		// an extension began) is read again and judged on its new status.
		moved, err := g.Store.SetVolumeStatusFrom(ctx, v.ID, v.Status, models.StatusDeleting)
		if err != nil {
			writeError(w, err)
			return
		}
		if !moved {
			if attempt < 3 {
				continue
			}
			writeError(w, apiErr(http.StatusConflict, "volume_busy", "volume %s keeps changing status; ask again", v.ID))
			return
		}
		if _, err := g.Temporal.ExecuteWorkflow(ctx, contract.DeleteOptions(v.ID), contract.DeleteVolumeWorkflow, in); err != nil {
			// Nothing started: put the status back so the delete can be asked again.
			_ = g.Store.UpdateVolume(context.WithoutCancel(ctx), v.ID, map[string]any{"status": v.Status})
			writeError(w, apiErr(http.StatusServiceUnavailable, "temporal_unavailable", "could not start the deletion: %v", err))
			return
		}
		g.logCtx(ctx).Info("volume deletion started", "volume_id", v.ID, "host", v.Host)
		writeJSON(w, http.StatusAccepted, map[string]string{"id": v.ID, "status": models.StatusDeleting})
		return
	}
}

// provisionOptions are contract.ProvisionOptions with the ID of the request of ctx, if any, in
// the run's memo.
func provisionOptions(ctx context.Context, workflowID, host string) client.StartWorkflowOptions {
	opts := contract.ProvisionOptions(workflowID, host)
	if id := RequestIDOf(ctx); id != "" {
		opts.Memo = map[string]any{contract.MemoRequestID: id}
	}
	return opts
}
