package starter

import (
	"context"
	"errors"
	"net/http"

	"github.com/imagevol/imagevol/imagesource"
)

// imageNotFound is the answer for an image that does not exist or that the caller's project
// may not use: the same for both, so that a private image's existence does not leak.
func imageNotFound(id string) *APIError {
	return apiErr(http.StatusBadRequest, "image_not_found", "image %s does not exist", id)
}

// usableImage reads an image's metadata and refuses one that is missing, that project may not
// use (canUse), or that is not active, in that order: an image the project may not use is
// answered as a missing one whatever its status. It runs on every create and warm-up, cached
// image or not, so a cache entry is never a way around the image's visibility.
func (g *Gateway) usableImage(ctx context.Context, project, id string) (imagesource.Image, error) {
	img, err := g.Images.Get(ctx, id)
	switch {
	case errors.Is(err, imagesource.ErrNotFound):
		return img, imageNotFound(id)
	case errors.Is(err, imagesource.ErrUnavailable):
		return img, apiErr(http.StatusServiceUnavailable, "image_service_unavailable", "%v", err)
	case err != nil:
		return img, err
	}
	ok, err := g.canUse(ctx, project, img)
	if err != nil {
		return img, err
	}
	if !ok {
		g.logCtx(ctx).Info("image refused: not visible to the project", "image_id", img.ID, "project", project,
			"owner", img.Owner, "visibility", img.Visibility)
		return imagesource.Image{}, imageNotFound(id)
	}
	if img.Status != imagesource.StatusActive {
		return img, apiErr(http.StatusConflict, "image_not_active", "image %s is %s, not active", img.ID, img.Status)
	}
	return img, nil
}

// canUse applies Glance's image visibility rules, as Cinder relies on them, to project: a
// public or community image is everyone's; any other image is its owner's, and a shared one
// also that of each project that accepted its membership. imagevol decides this itself from
// the metadata it reads with its own Glance credentials (the same with static and Keystone
// tokens); the caller's role does not matter, admins included. An image whose visibility
// imagevol does not know counts as private. Memberships are read anew every time: a revoked
// share takes effect on the next request.
func (g *Gateway) canUse(ctx context.Context, project string, img imagesource.Image) (bool, error) {
	switch {
	case project == "":
		return false, nil
	case img.Visibility == imagesource.VisibilityPublic || img.Visibility == imagesource.VisibilityCommunity:
		return true, nil
	case img.Owner != "" && img.Owner == project:
		return true, nil
	case img.Visibility != imagesource.VisibilityShared:
		return false, nil
	}
	members, ok := g.Images.(imagesource.Members)
	if !ok {
		return false, nil
	}
	status, err := members.MemberStatus(ctx, img.ID, project)
	switch {
	case errors.Is(err, imagesource.ErrNotFound):
		return false, nil
	case errors.Is(err, imagesource.ErrUnavailable):
		return false, apiErr(http.StatusServiceUnavailable, "image_service_unavailable", "%v", err)
	case err != nil:
		// Glance refused to tell (imagevol's user may not read the members): the share cannot
		// be shown, so the image is not usable.
		g.logCtx(ctx).Warn("image members unreadable; the image is refused", "image_id", img.ID, "project", project, "err", err)
		return false, nil
	}
	return status == imagesource.MemberAccepted, nil
}
