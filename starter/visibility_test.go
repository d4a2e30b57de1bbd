package starter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/imagevol/imagevol/imagesource"
	"github.com/imagevol/imagevol/models"
)

// images is an image source held in memory, for the visibility rules' table; the e2e tests run
// the same rules against Glance.
type images struct {
	byID    map[string]imagesource.Image
	members map[string]string // "image/project" -> status
	err     error             // returned by MemberStatus when set
}

func (m *images) Get(_ context.Context, id string) (imagesource.Image, error) {
	img, ok := m.byID[id]
	if !ok {
		return img, fmt.Errorf("image %s: %w", id, imagesource.ErrNotFound)
	}
	return img, nil
}

func (m *images) Open(context.Context, string, int64) (io.ReadCloser, error) {
	return nil, errors.New("not here")
}

func (m *images) MemberStatus(_ context.Context, image, project string) (string, error) {
	if m.err != nil {
		return "", m.err
	}
	s, ok := m.members[image+"/"+project]
	if !ok {
		return "", imagesource.ErrNotFound
	}
	return s, nil
}

func TestImageVisibility(t *testing.T) {
	img := func(id, owner, vis, status string) imagesource.Image {
		return imagesource.Image{ID: id, Owner: owner, Visibility: vis, Status: status}
	}
	src := &images{byID: map[string]imagesource.Image{}, members: map[string]string{
		"shared/p-acc": imagesource.MemberAccepted, "shared/p-pend": imagesource.MemberPending, "shared/p-rej": imagesource.MemberRejected,
		"private/p-acc": imagesource.MemberAccepted, // a leftover membership of an image made private again
	}}
	for _, i := range []imagesource.Image{
		img("public", "owner", imagesource.VisibilityPublic, "active"),
		img("community", "owner", imagesource.VisibilityCommunity, "active"),
		img("shared", "owner", imagesource.VisibilityShared, "active"),
		img("private", "owner", imagesource.VisibilityPrivate, "active"),
		img("unowned", "", imagesource.VisibilityShared, "active"),
		img("odd", "owner", "unheard-of", "active"),
		img("private-off", "owner", imagesource.VisibilityPrivate, imagesource.StatusDeactivated),
		img("public-off", "owner", imagesource.VisibilityPublic, imagesource.StatusDeactivated),
	} {
		src.byID[i.ID] = i
	}
	g := &Gateway{Images: src, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	cases := []struct {
		image, project string
		status         int    // 0: usable
		code           string // of the refusal
	}{
		{"public", "p-any", 0, ""},
		{"community", "p-any", 0, ""},
		{"shared", "owner", 0, ""},
		{"shared", "p-acc", 0, ""},
		{"shared", "p-pend", 400, "image_not_found"},
		{"shared", "p-rej", 400, "image_not_found"},
		{"shared", "p-any", 400, "image_not_found"},
		{"private", "owner", 0, ""},
		{"private", "p-acc", 400, "image_not_found"},
		{"private", "p-any", 400, "image_not_found"},
		{"unowned", "p-any", 400, "image_not_found"},
		{"unowned", "", 400, "image_not_found"},
		{"odd", "p-any", 400, "image_not_found"},
		{"odd", "owner", 0, ""},
		{"missing", "owner", 400, "image_not_found"},
		// an invisible image's status does not show: not 409 image_not_active
		{"private-off", "p-any", 400, "image_not_found"},
		{"private-off", "owner", 409, "image_not_active"},
		{"public-off", "p-any", 409, "image_not_active"},
	}
	for _, c := range cases {
		_, err := g.usableImage(context.Background(), c.project, c.image)
		var ae *APIError
		switch {
		case c.status == 0 && err != nil:
			t.Errorf("%s for %s: %v, want usable", c.image, c.project, err)
		case c.status != 0 && (!errors.As(err, &ae) || ae.Status != c.status || ae.Code != c.code):
			t.Errorf("%s for %s: %v, want %d %s", c.image, c.project, err, c.status, c.code)
		}
	}
	// An image the project may not use gets the very answer an unknown one does.
	_, hidden := g.usableImage(context.Background(), "p-any", "private")
	_, unknown := g.usableImage(context.Background(), "p-any", "missing")
	if hidden.Error() != imageNotFound("private").Error() || unknown.Error() != imageNotFound("missing").Error() {
		t.Errorf("hidden %v, unknown %v", hidden, unknown)
	}
	// Glance down while reading the members: 503, not a guess either way.
	src.err = fmt.Errorf("glance: %w", imagesource.ErrUnavailable)
	if _, err := g.usableImage(context.Background(), "p-acc", "shared"); !errors.As(err, new(*APIError)) || err.(*APIError).Status != http.StatusServiceUnavailable {
		t.Errorf("members unreadable: %v, want 503", err)
	}
	// Glance refusing to show them: not a member.
	src.err = errors.New("glance: image shared: Expected HTTP response code [200] when accessing [GET ...], but got 403 instead")
	if _, err := g.usableImage(context.Background(), "p-acc", "shared"); !errors.As(err, new(*APIError)) || err.(*APIError).Code != "image_not_found" {
		t.Errorf("members refused: %v, want image_not_found", err)
	}
}

func TestSizeBounds(t *testing.T) {
	cases := []struct {
		max  int64
		size int
		code string // "" accepted
	}{
		{0, 1, ""},
		{0, 1000, ""},
		{0, 1001, CodeVolumeTooLarge},
		{0, 0, CodeInvalidSize},
		{0, -1, CodeInvalidSize},
		{0, 17179869185, CodeVolumeTooLarge},
		{16384, 16384, ""},
		{16384, 16385, CodeVolumeTooLarge},
		{models.MaxSizeGiB + 5, int(models.MaxSizeGiB), ""},
		{models.MaxSizeGiB + 5, int(models.MaxSizeGiB + 1), CodeVolumeTooLarge},
	}
	for _, c := range cases {
		g := &Gateway{MaxVolumeSizeGB: c.max}
		err := g.checkSize(c.size)
		var ae *APIError
		if c.code == "" && err != nil || c.code != "" && (!errors.As(err, &ae) || ae.Status != 400 || ae.Code != c.code) {
			t.Errorf("max %d, size %d: %v, want %q", c.max, c.size, err, c.code)
		}
		if err == nil {
			if _, err := models.GiBToBytes(int64(c.size)); err != nil {
				t.Errorf("size %d accepted, but its bytes do not fit: %v", c.size, err)
			}
		}
	}
}

func TestQuotaLimits(t *testing.T) {
	q := &Quotas{Default: QuotaLimits{Volumes: 10, Gigabytes: 1000}, Projects: map[string]QuotaLimits{
		"big": {Volumes: -1, Gigabytes: -1}, "none": {Volumes: 0, Gigabytes: 100}, "small": {Volumes: 5, Gigabytes: 20},
	}}
	cases := []struct {
		project string
		used    models.ProjectUsage
		size    int64
		quota   string // the quota named in the refusal; "" accepted
	}{
		{"unlisted", models.ProjectUsage{Volumes: 9, GB: 990}, 10, ""},
		{"unlisted", models.ProjectUsage{Volumes: 10, GB: 10}, 1, QuotaNameVolumes},
		{"unlisted", models.ProjectUsage{Volumes: 1, GB: 990}, 11, QuotaNameGigabytes},
		{"big", models.ProjectUsage{Volumes: 1 << 40, GB: 1 << 50}, 1000, ""},
		{"none", models.ProjectUsage{}, 1, QuotaNameVolumes},
		{"small", models.ProjectUsage{Volumes: 4, GB: 19}, 1, ""},
		{"small", models.ProjectUsage{Volumes: 4, GB: 19}, 2, QuotaNameGigabytes},
		// counted in every status but gone: a volume being deleted still counts
		{"small", models.ProjectUsage{Volumes: 5}, 1, QuotaNameVolumes},
	}
	for _, c := range cases {
		err := q.For(c.project).check(c.project, c.used, c.size)
		var ae *APIError
		if c.quota == "" && err != nil || c.quota != "" && (!errors.As(err, &ae) || ae.Status != 413 || ae.Code != CodeQuotaExceeded ||
			!strings.Contains(ae.Message, "quota exceeded: "+c.quota+":")) {
			t.Errorf("%s using %+v, +%d GiB: %v; want refusal naming %q", c.project, c.used, c.size, err, c.quota)
		}
	}
	var none *Quotas
	if l := none.For("x"); l.Volumes >= 0 || l.Gigabytes >= 0 {
		t.Errorf("nil quotas: %+v, want no limit", l)
	}
}
