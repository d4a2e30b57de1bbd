package contract

import (
	"errors"

	"go.temporal.io/sdk/temporal"

	"github.com/imagevol/imagevol/imagesource"
)

// Error types of non-retryable failures, as seen in temporal.ApplicationError.Type(). The API
// gateway maps them to HTTP status codes; everything else is retried by Temporal.
const (
	ErrTypeImageNotFound    = "ImageNotFound"
	ErrTypeImageNotActive   = "ImageNotActive"
	ErrTypeImageNoHash      = "ImageNoHash"
	ErrTypeHashMismatch     = "ImageHashMismatch"
	ErrTypeSizeMismatch     = "ImageSizeMismatch"
	ErrTypeUnsafeImage      = "UnsafeImage"
	ErrTypeCorruptImage     = "CorruptImage"
	ErrTypeVolumeTooSmall   = "VolumeTooSmall"
	ErrTypeUnsupported      = "UnsupportedFormat"
	ErrTypeNoSpace          = "InsufficientSpace"
	ErrTypeCacheVolumeGone  = "CacheVolumeGone"
	ErrTypeVolumeNotFound   = "VolumeNotFound"
	ErrTypeConflictingImage = "ConflictingImage"
	ErrTypeEntryPinned      = "CacheEntryPinned"
	// ErrTypeCacheFull: the imported image uses more than the cache's limits leave room for; the
	// fill gives its entry up and the provisions download on their own.
	ErrTypeCacheFull = "CacheFull"
	// ErrTypeDeadlineExceeded: a step kept failing until the provision's deadline; the message
	// names the step and its last error.
	ErrTypeDeadlineExceeded = "ProvisionDeadlineExceeded"
)

// ErrTypeImageServiceUnavailable is a retryable failure: the image service could not be
// reached or failed. A step failing with it is retried until the provision's deadline.
const ErrTypeImageServiceUnavailable = "ImageServiceUnavailable"

// NonRetryable lists the error types a retry policy must not retry.
var NonRetryable = []string{
	ErrTypeImageNotFound, ErrTypeImageNotActive, ErrTypeImageNoHash, ErrTypeHashMismatch,
	ErrTypeSizeMismatch, ErrTypeUnsafeImage, ErrTypeCorruptImage, ErrTypeVolumeTooSmall,
	ErrTypeUnsupported, ErrTypeNoSpace, ErrTypeCacheVolumeGone, ErrTypeVolumeNotFound,
	ErrTypeConflictingImage, ErrTypeEntryPinned, ErrTypeCacheFull,
}

// imageFaults are the failures that come from the image itself: a fill failing with one of them
// fails every provision waiting on it; after any other failure they download on their own.
var imageFaults = map[string]bool{
	ErrTypeImageNotFound: true, ErrTypeImageNotActive: true, ErrTypeImageNoHash: true, ErrTypeHashMismatch: true,
	ErrTypeSizeMismatch: true, ErrTypeUnsafeImage: true, ErrTypeCorruptImage: true, ErrTypeUnsupported: true,
}

// IsImageFault reports whether a failure of that type lies in the image, not in the cache.
func IsImageFault(errType string) bool { return imageFaults[errType] }

// Reasons a volume was not cached, reported as the volume's cache_reason.
const (
	ReasonDisabled       = "disabled"
	ReasonTooBig         = "too_big"
	ReasonFull           = "full"
	ReasonFillInProgress = "fill_in_progress"
	ReasonQuota          = "quota"
	ReasonFillFailed     = "fill_failed"
	ReasonEvicted        = "evicted"  // the entry was evicted under every attempt to clone from it
	ReasonEvicting       = "evicting" // the content's entry on this host is being evicted
)

// Reasons an image whose data the image service keeps in RBD was downloaded instead of cloned
// from there, reported as the volume's cache_reason when nothing else is.
const (
	ReasonStoreOtherCluster   = "image_store_other_cluster"    // the location is on another Ceph cluster
	ReasonStorePoolNotAllowed = "image_store_pool_not_allowed" // not in worker.image_store_pools
	ReasonStoreLocation       = "image_store_location_invalid" // names another image, or no snapshot
	ReasonStoreNoAccess       = "image_store_no_access"        // the worker's Ceph user cannot read it
	ReasonStoreMissing        = "image_store_missing"          // no such RBD image or snapshot
	ReasonStoreSizeMismatch   = "image_store_size_mismatch"    // its size is not the image's
	ReasonStoreNotRaw         = "image_store_not_raw"          // its bytes are a disk format to convert
)

// TypedError gives a retryable error of a known cause its error type, so that a provision
// failing at its deadline says which part was down. Application errors pass unchanged.
func TypedError(err error) error {
	var appErr *temporal.ApplicationError
	switch {
	case err == nil || errors.As(err, &appErr):
		return err
	case errors.Is(err, imagesource.ErrUnavailable):
		return temporal.NewApplicationErrorWithCause(err.Error(), ErrTypeImageServiceUnavailable, err)
	}
	return err
}

// ErrTypeInvalidSize fails a provision whose size in GiB has more bytes than an int64 holds.
// The gateway never starts one (its max_volume_size_gb is far below); the check keeps the
// workflow from wrapping the size around if one is started some other way.
const ErrTypeInvalidSize = "InvalidVolumeSize"
