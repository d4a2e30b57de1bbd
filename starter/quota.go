package starter

import (
	"net/http"

	"github.com/imagevol/imagevol/models"
)

// DefaultMaxVolumeSizeGB is the largest size_gb when Gateway.MaxVolumeSizeGB is 0.
const DefaultMaxVolumeSizeGB = 1000

// Error codes of sizes and quotas.
const (
	CodeInvalidSize    = "invalid_size"     // 400: size_gb is 0 or negative
	CodeVolumeTooLarge = "volume_too_large" // 400: size_gb is over max_volume_size_gb
	CodeQuotaExceeded  = "quota_exceeded"   // 413: the project's volumes or gigabytes quota
)

// Cinder's names of the two quotas, which a quota_exceeded message names.
const (
	QuotaNameVolumes   = "volumes"
	QuotaNameGigabytes = "gigabytes"
)

// unlimited is a limit that limits nothing.
const unlimited = -1

// QuotaLimits are one project's quotas, as Cinder names them: the most volumes it may have,
// and the most GiB they may add up to. A negative limit is no limit; 0 allows none.
type QuotaLimits struct {
	Volumes   int64
	Gigabytes int64
}

// Quotas are the quotas of every project: Default for a project that Projects does not list.
type Quotas struct {
	Default  QuotaLimits
	Projects map[string]QuotaLimits
}

// For is project's quotas; a nil Quotas is no limit at all.
func (q *Quotas) For(project string) QuotaLimits {
	if q == nil {
		return QuotaLimits{Volumes: unlimited, Gigabytes: unlimited}
	}
	if l, ok := q.Projects[project]; ok {
		return l
	}
	return q.Default
}

// check refuses one more volume of sizeGB GiB for a project that already uses u: 413
// quota_exceeded, naming the quota, as Cinder's VolumeLimitExceeded and
// VolumeSizeExceedsAvailableQuota do. Sizes are bounded by checkSize, so the sums fit.
func (l QuotaLimits) check(project string, u models.ProjectUsage, sizeGB int64) error {
	if l.Volumes >= 0 && u.Volumes+1 > l.Volumes {
		return apiErr(http.StatusRequestEntityTooLarge, CodeQuotaExceeded,
			"quota exceeded: %s: project %s has %d volumes, its quota is %d", QuotaNameVolumes, project, u.Volumes, l.Volumes)
	}
	return l.checkGigabytes(project, u, sizeGB)
}

// checkGigabytes refuses sizeGB more GiB for a project that already uses u: 413
// quota_exceeded, naming the gigabytes quota.
func (l QuotaLimits) checkGigabytes(project string, u models.ProjectUsage, sizeGB int64) error {
	if l.Gigabytes >= 0 && u.GB+sizeGB > l.Gigabytes {
		return apiErr(http.StatusRequestEntityTooLarge, CodeQuotaExceeded,
			"quota exceeded: %s: project %s uses %d GiB, %d more would pass its quota of %d", QuotaNameGigabytes, project, u.GB, sizeGB, l.Gigabytes)
	}
	return nil
}

// maxVolumeSizeGB is the largest size_gb accepted.
func (g *Gateway) maxVolumeSizeGB() int64 {
	if g.MaxVolumeSizeGB <= 0 {
		return DefaultMaxVolumeSizeGB
	}
	return min(g.MaxVolumeSizeGB, models.MaxSizeGiB)
}

// checkSize refuses a size_gb that is not a positive number of GiB up to maxVolumeSizeGB; past
// it, no size reaches the arithmetic that turns GiB into bytes.
func (g *Gateway) checkSize(sizeGB int) error {
	switch max := g.maxVolumeSizeGB(); {
	case sizeGB <= 0:
		return apiErr(http.StatusBadRequest, CodeInvalidSize, "size_gb must be a positive number of GiB, got %d", sizeGB)
	case int64(sizeGB) > max:
		return apiErr(http.StatusBadRequest, CodeVolumeTooLarge, "size_gb %d is over the largest volume allowed, %d GiB", sizeGB, max)
	}
	return nil
}
