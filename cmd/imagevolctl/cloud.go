package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/config"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
)

// fromCloud finds the gateway and a token as the openstack client does: it reads the cloud
// OS_CLOUD names from clouds.yaml (OS_CLIENT_CONFIG_FILE, ./clouds.yaml,
// ~/.config/openstack/, /etc/openstack/), authenticates to its Keystone, and takes the gateway
// from the catalog's block-storage endpoint (<gateway>/v3/<project>), which imagevol serves.
func fromCloud(ctx context.Context) (base, token string, err error) {
	ao, eo, tlsConfig, err := clouds.Parse()
	if err != nil {
		return "", "", fmt.Errorf("OS_CLOUD %q: %w", os.Getenv("OS_CLOUD"), err)
	}
	pc, err := config.NewProviderClient(ctx, ao, config.WithTLSConfig(tlsConfig))
	if err != nil {
		return "", "", fmt.Errorf("OS_CLOUD %q: authenticate: %w", os.Getenv("OS_CLOUD"), err)
	}
	sc, err := openstack.NewBlockStorageV3(pc, eo)
	if err != nil {
		return "", "", fmt.Errorf("OS_CLOUD %q: no block-storage endpoint in the catalog: %w", os.Getenv("OS_CLOUD"), err)
	}
	base, _, ok := strings.Cut(sc.Endpoint, "/v3/")
	if !ok {
		return "", "", fmt.Errorf("OS_CLOUD %q: block-storage endpoint %s is not <gateway>/v3/<project>", os.Getenv("OS_CLOUD"), sc.Endpoint)
	}
	return base, pc.Token(), nil
}
