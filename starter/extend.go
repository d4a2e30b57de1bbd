package starter

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/models"
)

// CodeInvalidVolume is the code of a request the volume's status does not allow (Cinder's
// InvalidVolume, a 400).
const CodeInvalidVolume = "invalid_volume"

// ExtendVolumeRequest is the body of POST /v1/volumes/{id}/extend.
type ExtendVolumeRequest struct {
	SizeGB int `json:"size_gb"`
}

// extendRoutes serves the extension of volumes in imagevol's own API.
func (g *Gateway) extendRoutes(mux *http.ServeMux) {
	g.handle(mux, "POST /v1/volumes/{id}/extend", g.extendVolume)
}

// extendVolume serves POST /v1/volumes/{id}/extend.
func (g *Gateway) extendVolume(w http.ResponseWriter, r *http.Request) {
	var req ExtendVolumeRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, apiErr(http.StatusBadRequest, "bad_request", "malformed JSON body: %v", err))
		return
	}
	v, err := g.extend(r, req.SizeGB)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"id": v.ID, "status": models.StatusExtending, "workflow_id": contract.ExtendWorkflowID(v.ID)})
}

// extend grows the caller's volume of the request's path to newSize GiB, as Cinder's os-extend
// does: the volume must be available, the new size larger than the current one, within the
// largest volume allowed and within the project's gigabytes quota. The status check, the quota
// check and the move to "extending" are one step under the project's quota lock; the status is
// put back if the workflow cannot be started.
func (g *Gateway) extend(r *http.Request, newSize int) (*models.Volume, error) {
	ctx := r.Context()
	v, err := g.ownVolume(r)
	if err != nil {
		return nil, err
	}
	if err := g.checkSize(newSize); err != nil {
		return nil, err
	}
	project := projectOf(r)
	limits := g.Quotas.For(project)
	v, err = g.Store.BeginExtend(ctx, v.ID, project, func(v *models.Volume, u models.ProjectUsage) error {
		if v.Status != models.StatusAvailable {
			return apiErr(http.StatusBadRequest, CodeInvalidVolume,
				"Invalid volume: Volume %s status must be available to extend, but current status is: %s.", v.ID, v.Status)
		}
		if newSize <= v.SizeGB {
			return apiErr(http.StatusBadRequest, CodeInvalidSize,
				"New size for extend must be greater than current size. (current: %d, extended: %d).", v.SizeGB, newSize)
		}
		return limits.checkGigabytes(project, u, int64(newSize-v.SizeGB))
	})
	switch {
	case errors.Is(err, models.ErrNotFound):
		return nil, apiErr(http.StatusNotFound, "volume_not_found", "volume %s not found", r.PathValue("id"))
	case errors.Is(err, models.ErrConflict):
		return nil, apiErr(http.StatusBadRequest, CodeInvalidVolume,
			"Invalid volume: Volume %s status must be available to extend, but its status changed.", r.PathValue("id"))
	case err != nil:
		return nil, err
	}
	in := contract.ExtendVolumeInput{VolumeID: v.ID, Host: v.Host, Pool: v.Pool, OldSizeGB: v.SizeGB, NewSizeGB: newSize}
	if _, err := g.Temporal.ExecuteWorkflow(ctx, contract.ExtendOptions(v.ID), contract.ExtendVolumeWorkflow, in); err != nil {
		// Nothing started: put the status back so the extension can be asked again.
		_ = g.Store.UpdateVolume(context.WithoutCancel(ctx), v.ID, map[string]any{"status": v.Status})
		return nil, apiErr(http.StatusServiceUnavailable, "temporal_unavailable", "could not start the extension: %v", err)
	}
	g.logCtx(ctx).Info("volume extension started", "volume_id", v.ID, "host", v.Host, "from_gb", v.SizeGB, "to_gb", newSize)
	return v, nil
}

// cinderAction serves POST /v3/{project_id}/volumes/{id}/action. Of Cinder's volume actions,
// only os-extend is served: 202 without a body.
func (g *Gateway) cinderAction(w http.ResponseWriter, r *http.Request) {
	var body map[string]json.RawMessage
	if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&body); err != nil || len(body) != 1 {
		writeCinderError(w, apiErr(http.StatusBadRequest, "bad_request", "Invalid input received: the body must hold one action"))
		return
	}
	raw, ok := body["os-extend"]
	if !ok {
		for name := range body {
			writeCinderError(w, apiErr(http.StatusBadRequest, "bad_request", "There is no such action: %s", name))
		}
		return
	}
	var args map[string]json.RawMessage
	if json.Unmarshal(raw, &args) != nil || args == nil {
		writeCinderError(w, apiErr(http.StatusBadRequest, "bad_request", "Invalid input received: the body must be {\"os-extend\": {\"new_size\": N}}"))
		return
	}
	size, err := cinderSize(args["new_size"])
	if err != nil {
		writeCinderError(w, apiErr(http.StatusBadRequest, "bad_request", "Invalid input received: new_%v", err))
		return
	}
	if _, err := g.extend(r, size); err != nil {
		writeCinderError(w, err)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}
