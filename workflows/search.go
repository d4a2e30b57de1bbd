package workflows

import "go.temporal.io/sdk/temporal"

// Search attributes of provision workflows, registered on the namespace (see devtemporal), so
// the Temporal UI can filter provisions — e.g. the failed ones of one image. The gateway sets
// ImageID, Host, ProjectID and Phase when it starts a provision; the workflow sets CacheResult
// and moves Phase along.
var (
	SearchImageID     = temporal.NewSearchAttributeKeyKeyword("ImageID")
	SearchHost        = temporal.NewSearchAttributeKeyKeyword("Host")
	SearchProjectID   = temporal.NewSearchAttributeKeyKeyword("ProjectID")
	SearchCacheResult = temporal.NewSearchAttributeKeyKeyword("CacheResult")
	SearchPhase       = temporal.NewSearchAttributeKeyKeyword("Phase")
)

// Phases a provision's Phase search attribute goes through.
const (
	PhaseCreating  = "creating"
	PhaseFilling   = "filling" // waiting on the cluster's fill of the image
	PhaseAvailable = "available"
	PhaseError     = "error"
)
