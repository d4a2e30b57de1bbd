package models

import (
	"errors"
	"fmt"
	"math"
)

// bytesPerGiB is one GiB, the unit of every volume size.
const bytesPerGiB = int64(1) << 30

// MaxSizeGiB is the largest size in GiB whose bytes fit an int64 (8 EiB less a GiB): the bound
// every GiB count must stay under before it is turned into bytes.
const MaxSizeGiB = math.MaxInt64 / bytesPerGiB

// ErrSizeOverflow means a size in GiB is negative or has more bytes than an int64 holds.
var ErrSizeOverflow = errors.New("models: size out of range")

// GiBToBytes returns gb GiB in bytes, checking before it multiplies: a size whose bytes would
// wrap around (17179869185 GiB is 2^64 + 2^30 bytes, which wraps to 1 GiB) is ErrSizeOverflow.
func GiBToBytes(gb int64) (int64, error) {
	if gb < 0 || gb > MaxSizeGiB {
		return 0, fmt.Errorf("%w: %d GiB", ErrSizeOverflow, gb)
	}
	return gb * bytesPerGiB, nil
}

// GiBToBytesCapped returns gb GiB in bytes, math.MaxInt64 when that does not fit and 0 for a
// negative gb: for limits, where a bound past what an int64 holds bounds nothing.
func GiBToBytesCapped(gb int64) int64 {
	switch {
	case gb <= 0:
		return 0
	case gb > MaxSizeGiB:
		return math.MaxInt64
	}
	return gb * bytesPerGiB
}

// ExceedsGiB reports whether bytes is more than gb GiB. It divides instead of multiplying, so
// no gb can make it wrap.
func ExceedsGiB(bytes int64, gb int64) bool {
	return bytes > 0 && int64(GiBCeil(bytes)) > gb
}

// GiBCeil converts bytes to whole GiB, rounding up, as Cinder sizes volumes. It cannot
// overflow: it divides before it rounds.
func GiBCeil(bytes int64) int {
	if bytes <= 0 {
		return 0
	}
	n := bytes / bytesPerGiB
	if bytes%bytesPerGiB != 0 {
		n++
	}
	return int(n)
}
