// Package glance implements imagesource.Source on the OpenStack Image service (Glance v2)
// through gophercloud, and adds the few calls tests and tools need to put images there.
//
// Of imagevol's packages it imports only imagesource.
package glance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/members"

	"github.com/imagevol/imagevol/imagesource"
)

// Client talks to one Glance endpoint.
type Client struct {
	sc *gophercloud.ServiceClient
}

var (
	_ imagesource.Source  = (*Client)(nil)
	_ imagesource.Members = (*Client)(nil)
)

// New returns a client for the unversioned Glance endpoint (e.g. http://127.0.0.1:9292/). With
// an empty token it speaks to a Glance that runs without Keystone.
func New(endpoint, token string) (*Client, error) {
	if endpoint == "" {
		return nil, errors.New("glance: no endpoint")
	}
	if !strings.HasSuffix(endpoint, "/") {
		endpoint += "/"
	}
	pc := &gophercloud.ProviderClient{
		HTTPClient:      httpClient(),
		EndpointLocator: func(gophercloud.EndpointOpts) (string, error) { return endpoint, nil },
	}
	if token != "" {
		pc.SetToken(token)
	}
	sc, err := openstack.NewImageV2(pc, gophercloud.EndpointOpts{})
	if err != nil {
		return nil, fmt.Errorf("glance: %w", err)
	}
	return &Client{sc: sc}, nil
}

// httpClient is the HTTP client of every Glance client: no overall timeout, as an image
// download takes as long as it takes, but bounded connection and response-header waits.
func httpClient() http.Client {
	return http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		ResponseHeaderTimeout: 60 * time.Second,
		MaxIdleConnsPerHost:   16,
	}}
}

// classify maps gophercloud and transport errors onto imagesource's sentinels.
func classify(err error, id string) error {
	if err == nil {
		return nil
	}
	switch {
	case gophercloud.ResponseCodeIs(err, http.StatusNotFound):
		return fmt.Errorf("glance: image %s: %w", id, imagesource.ErrNotFound)
	case gophercloud.ResponseCodeIs(err, http.StatusNoContent):
		return fmt.Errorf("glance: image %s: %w", id, imagesource.ErrNoData)
	}
	var unexpected gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &unexpected) && unexpected.Actual < 500 {
		return fmt.Errorf("glance: image %s: %w", id, err)
	}
	return fmt.Errorf("glance: image %s: %w: %v", id, imagesource.ErrUnavailable, err)
}

func toImage(img *images.Image) imagesource.Image {
	out := imagesource.Image{
		ID: img.ID, Name: img.Name, Status: string(img.Status), DiskFormat: img.DiskFormat,
		Size: img.SizeBytes, VirtualSize: img.VirtualSize, Checksum: img.Checksum, UpdatedAt: img.UpdatedAt,
		Owner: img.Owner, Visibility: string(img.Visibility),
		ContainerFormat: img.ContainerFormat, MinDisk: img.MinDiskGigabytes, MinRAM: img.MinRAMMegabytes,
	}
	if v, ok := img.Properties["os_hash_algo"].(string); ok {
		out.HashAlgo = v
	}
	if v, ok := img.Properties["os_hash_value"].(string); ok {
		out.HashValue = v
	}
	if v, ok := img.Properties["direct_url"].(string); ok {
		out.DirectURL = v
	}
	for k, v := range img.Properties {
		s, ok := v.(string)
		if !ok || glanceCore[k] {
			continue
		}
		if out.Properties == nil {
			out.Properties = map[string]string{}
		}
		out.Properties[k] = s
	}
	return out
}

// glanceCore are keys of a Glance image that gophercloud leaves among its properties but that
// are Glance's own attributes, not custom properties.
var glanceCore = map[string]bool{
	"os_hash_algo": true, "os_hash_value": true, "os_hidden": true, "owner": true, "direct_url": true,
	"locations": true, "stores": true, "self": true, "schema": true, "protected": true,
}

// Get returns an image's metadata.
func (c *Client) Get(ctx context.Context, id string) (imagesource.Image, error) {
	img, err := images.Get(ctx, c.sc, id).Extract()
	if err != nil {
		return imagesource.Image{}, classify(err, id)
	}
	return toImage(img), nil
}

// Open streams the image's data from offset on. It issues its own GET because gophercloud's
// imagedata.Download rejects the 206 that a ranged request returns.
func (c *Client) Open(ctx context.Context, id string, offset int64) (io.ReadCloser, error) {
	opts := &gophercloud.RequestOpts{KeepResponseBody: true, OkCodes: []int{http.StatusOK}}
	if offset > 0 {
		opts.MoreHeaders = map[string]string{"Range": fmt.Sprintf("bytes=%d-", offset)}
		opts.OkCodes = []int{http.StatusPartialContent}
	}
	resp, err := c.sc.Get(ctx, c.sc.ServiceURL("images", id, "file"), nil, opts)
	if err != nil {
		return nil, classify(err, id)
	}
	if resp.StatusCode == http.StatusNoContent {
		resp.Body.Close()
		return nil, fmt.Errorf("glance: image %s: %w", id, imagesource.ErrNoData)
	}
	return resp.Body, nil
}

// CreateOpts describes an image to create.
type CreateOpts struct {
	Name       string
	DiskFormat string // raw, qcow2, ...
	Properties map[string]string
	// Visibility is public, community, shared or private; empty: Glance's default (shared).
	Visibility string
	// Owner is the owning project's ID; empty: the caller's project (none for a Glance without
	// Keystone). Setting another project needs Glance's admin rights.
	Owner string
}

// Create registers an image and uploads its data; it returns the image once Glance reports it.
func (c *Client) Create(ctx context.Context, opts CreateOpts, data io.Reader) (imagesource.Image, error) {
	co := images.CreateOpts{Name: opts.Name, DiskFormat: opts.DiskFormat, ContainerFormat: "bare", Properties: opts.Properties}
	if opts.Owner != "" {
		// gophercloud's CreateOpts has no owner; its properties are top-level keys of the body.
		co.Properties = map[string]string{"owner": opts.Owner}
		for k, v := range opts.Properties {
			co.Properties[k] = v
		}
	}
	if opts.Visibility != "" {
		v := images.ImageVisibility(opts.Visibility)
		co.Visibility = &v
	}
	img, err := images.Create(ctx, c.sc, co).Extract()
	if err != nil {
		return imagesource.Image{}, classify(err, opts.Name)
	}
	if err := imagedata.Upload(ctx, c.sc, img.ID, data).ExtractErr(); err != nil {
		_ = c.Delete(ctx, img.ID)
		return imagesource.Image{}, classify(err, img.ID)
	}
	return c.Get(ctx, img.ID)
}

// Delete removes an image; a missing image is not an error.
func (c *Client) Delete(ctx context.Context, id string) error {
	err := images.Delete(ctx, c.sc, id).ExtractErr()
	if gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
		return nil
	}
	return classify(err, id)
}

// MemberStatus returns project's membership status of a shared image (GET
// /v2/images/{id}/members/{project}): accepted, pending or rejected. A project that is not a
// member, like an image that does not exist, is imagesource.ErrNotFound.
func (c *Client) MemberStatus(ctx context.Context, imageID, project string) (string, error) {
	if project == "" {
		return "", fmt.Errorf("glance: image %s: no project: %w", imageID, imagesource.ErrNotFound)
	}
	m, err := members.Get(ctx, c.sc, imageID, project).Extract()
	if err != nil {
		return "", classify(err, imageID)
	}
	return m.Status, nil
}

// AddMember shares an image with a project (POST /v2/images/{id}/members); the membership
// starts pending until the project (or an admin) accepts it.
func (c *Client) AddMember(ctx context.Context, imageID, project string) error {
	_, err := members.Create(ctx, c.sc, imageID, project).Extract()
	return classify(err, imageID)
}

// SetMemberStatus sets a project's membership status of an image (PUT
// /v2/images/{id}/members/{project}): Glance lets the member itself, or an admin, do it.
func (c *Client) SetMemberStatus(ctx context.Context, imageID, project, status string) error {
	_, err := members.Update(ctx, c.sc, imageID, project, members.UpdateOpts{Status: status}).Extract()
	return classify(err, imageID)
}
