package glance

import (
	"context"
	"errors"
	"fmt"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
)

// NewFromKeystone authenticates to Keystone with auth and returns a client of the image
// endpoint its catalog lists for region (any region when empty) with the public interface.
// The client sends its Keystone token to Glance and authenticates again when the token expires
// (auth.AllowReauth), so it outlives any one token. Authentication is bounded by ctx.
func NewFromKeystone(ctx context.Context, auth gophercloud.AuthOptions, region string) (*Client, error) {
	if auth.IdentityEndpoint == "" {
		return nil, errors.New("glance: no Keystone auth URL")
	}
	// Keystone refuses to re-issue a token given as the credential without a new scope:
	// such a client works until that token expires.
	if auth.TokenID != "" && auth.Scope == nil {
		auth.AllowReauth = false
	}
	pc, err := openstack.NewClient(auth.IdentityEndpoint)
	if err != nil {
		return nil, fmt.Errorf("glance: keystone %s: %w", auth.IdentityEndpoint, err)
	}
	pc.HTTPClient = httpClient()
	if err := openstack.Authenticate(ctx, pc, auth); err != nil {
		return nil, fmt.Errorf("glance: authenticate to keystone at %s: %w", auth.IdentityEndpoint, err)
	}
	sc, err := openstack.NewImageV2(pc, gophercloud.EndpointOpts{Region: region, Availability: gophercloud.AvailabilityPublic})
	if err != nil {
		where := "any region"
		if region != "" {
			where = "region " + region
		}
		return nil, fmt.Errorf("glance: no public image endpoint in %s of keystone's catalog at %s: %w", where, auth.IdentityEndpoint, err)
	}
	return &Client{sc: sc}, nil
}

// Endpoint is the Glance endpoint the client talks to (from the catalog, for a client made by
// NewFromKeystone).
func (c *Client) Endpoint() string { return c.sc.Endpoint }
