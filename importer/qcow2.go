package importer

import (
	"encoding/binary"
	"fmt"
)

// qcow2 header fields (big-endian), per the QEMU qcow2 specification.
const (
	qcow2OffVersion       = 4
	qcow2OffBackingOffset = 8
	qcow2OffBackingSize   = 16
	qcow2OffClusterBits   = 20
	qcow2OffSize          = 24
	qcow2OffCryptMethod   = 32
	qcow2OffIncompatible  = 72
	qcow2OffHeaderLength  = 100
	qcow2V2HeaderLen      = 72
	qcow2V3HeaderLen      = 104

	// Incompatible feature bits.
	qcow2IncompatDirty       = 1 << 0
	qcow2IncompatCorrupt     = 1 << 1
	qcow2IncompatDataFile    = 1 << 2
	qcow2IncompatCompression = 1 << 3
	qcow2IncompatExtendedL2  = 1 << 4

	// Header extension types.
	qcow2ExtEnd           = 0x00000000
	qcow2ExtBackingFormat = 0xe2792aca
	qcow2ExtDataFile      = 0x44415441
)

// qcow2SafeIncompat are the incompatible features a read-only conversion handles without
// reading anything but the image: dirty (refcounts may be stale, which reading ignores), a
// compression type other than zlib (zstd), and extended L2 entries (subclusters). Corrupt and
// external-data-file are refused on their own; any other bit is a feature this code does not
// know, so it cannot tell what the converter would do with it.
const qcow2SafeIncompat = qcow2IncompatDirty | qcow2IncompatCompression | qcow2IncompatExtendedL2

// inspectQCOW2 checks a qcow2 image: version 2 or 3, no backing file, no external data file
// (neither the feature bit nor the extension naming it), no encryption, only known
// incompatible features, a plausible virtual size. Version 1 is the older qcow format, which
// also has backing files, and is refused.
func inspectQCOW2(im image) (Info, error) {
	h, err := im.read(0, qcow2V2HeaderLen, "qcow2 header")
	if err != nil {
		return Info{}, err
	}
	switch version := binary.BigEndian.Uint32(h[qcow2OffVersion:]); version {
	case 2, 3:
	case 1:
		return Info{}, fmt.Errorf("%w: a qcow (version 1) image, a format that is not imported", ErrUnsafeImage)
	default:
		return Info{}, fmt.Errorf("%w: qcow2 version %d", ErrCorruptImage, version)
	}
	clusterBits := binary.BigEndian.Uint32(h[qcow2OffClusterBits:])
	if clusterBits < 9 || clusterBits > 21 {
		return Info{}, fmt.Errorf("%w: qcow2 cluster bits %d outside 9..21", ErrCorruptImage, clusterBits)
	}
	clusterSize := uint64(1) << clusterBits
	if off := binary.BigEndian.Uint64(h[qcow2OffBackingOffset:]); off != 0 {
		// Name it in the error when it can be read; QEMU caps the name at 1023 bytes.
		n := min(uint64(binary.BigEndian.Uint32(h[qcow2OffBackingSize:])), 1023)
		name, _ := im.upTo(off, n, "qcow2 backing file name")
		return Info{}, fmt.Errorf("%w: qcow2 has a backing file %q", ErrUnsafeImage, name)
	}
	if binary.BigEndian.Uint32(h[qcow2OffCryptMethod:]) != 0 {
		return Info{}, fmt.Errorf("%w: qcow2 image is encrypted", ErrUnsafeImage)
	}
	vsize := binary.BigEndian.Uint64(h[qcow2OffSize:])
	if vsize > MaxVirtualSize {
		return Info{}, fmt.Errorf("%w: qcow2 virtual size %d is implausible", ErrCorruptImage, vsize)
	}

	extStart := uint64(qcow2V2HeaderLen)
	if binary.BigEndian.Uint32(h[qcow2OffVersion:]) == 3 {
		h3, err := im.read(0, qcow2V3HeaderLen, "qcow2 v3 header")
		if err != nil {
			return Info{}, err
		}
		incompat := binary.BigEndian.Uint64(h3[qcow2OffIncompatible:])
		switch {
		case incompat&qcow2IncompatDataFile != 0:
			return Info{}, fmt.Errorf("%w: qcow2 has an external data file", ErrUnsafeImage)
		case incompat&qcow2IncompatCorrupt != 0:
			return Info{}, fmt.Errorf("%w: qcow2 is marked corrupt", ErrCorruptImage)
		case incompat&^qcow2SafeIncompat != 0:
			return Info{}, fmt.Errorf("%w: qcow2 has unknown incompatible features %#x", ErrUnsafeImage, incompat&^qcow2SafeIncompat)
		}
		extStart = uint64(binary.BigEndian.Uint32(h3[qcow2OffHeaderLength:]))
		if extStart < qcow2V3HeaderLen || extStart > clusterSize {
			return Info{}, fmt.Errorf("%w: qcow2 header length %d", ErrCorruptImage, extStart)
		}
	}
	if err := checkQCOW2Extensions(im, extStart, clusterSize); err != nil {
		return Info{}, err
	}
	return Info{Format: FormatQCOW2, VirtualSize: int64(vsize)}, nil
}

// checkQCOW2Extensions walks the header extensions, which run from the end of the header to the
// end of the first cluster as QEMU reads them, and refuses an external data file name or a
// backing format (which only a backing file needs). A list that runs past its area is corrupt,
// as QEMU finds it.
func checkQCOW2Extensions(im image, start, clusterSize uint64) error {
	area, err := im.upTo(start, clusterSize-start, "qcow2 header extensions")
	if err != nil {
		return err
	}
	for off := uint64(0); off < uint64(len(area)); {
		if uint64(len(area))-off < 8 {
			return fmt.Errorf("%w: qcow2 header extension truncated", ErrCorruptImage)
		}
		typ := binary.BigEndian.Uint32(area[off:])
		n := uint64(binary.BigEndian.Uint32(area[off+4:]))
		off += 8
		if n > uint64(len(area))-off {
			return fmt.Errorf("%w: qcow2 header extension %#x of %d bytes runs past the header", ErrCorruptImage, typ, n)
		}
		switch typ {
		case qcow2ExtEnd:
			return nil
		case qcow2ExtDataFile:
			return fmt.Errorf("%w: qcow2 names an external data file %q", ErrUnsafeImage, area[off:off+n])
		case qcow2ExtBackingFormat:
			return fmt.Errorf("%w: qcow2 names a backing format %q", ErrUnsafeImage, area[off:off+n])
		}
		off += (n + 7) &^ 7
	}
	return nil
}
