package importer

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
)

// VHD footer and dynamic header fields (big-endian), per Microsoft's VHD specification.
const (
	vhdFooterLen        = 512
	vhdOffDataOffset    = 16
	vhdOffCurrentSize   = 48
	vhdOffGeometry      = 56
	vhdOffDiskType      = 60
	vhdDiskFixed        = 2
	vhdDiskDynamic      = 3
	vhdDiskDifferencing = 4

	vhdDynHeaderLen     = 1024
	vhdDynOffParentUUID = 40
	vhdDynOffParentName = 64
	vhdDynOffLocators   = 576
	vhdDynLocatorsLen   = 8 * 24
)

// inspectVHD checks a VHD whose footer copy starts the file (dynamic disks): not a
// differencing disk, no parent in the dynamic header (UUID, name or locators), a plausible size.
// The virtual size is the larger of the size field and the CHS geometry, since QEMU may take
// either depending on which program wrote the image.
func inspectVHD(im image) (Info, error) {
	f, err := im.read(0, vhdFooterLen, "vhd footer")
	if err != nil {
		return Info{}, err
	}
	switch t := binary.BigEndian.Uint32(f[vhdOffDiskType:]); t {
	case vhdDiskFixed, vhdDiskDynamic:
	case vhdDiskDifferencing:
		return Info{}, fmt.Errorf("%w: vhd is a differencing disk", ErrUnsafeImage)
	default:
		return Info{}, fmt.Errorf("%w: vhd disk type %d", ErrCorruptImage, t)
	}
	vsize := binary.BigEndian.Uint64(f[vhdOffCurrentSize:])
	cyls := uint64(binary.BigEndian.Uint16(f[vhdOffGeometry:]))
	chs := cyls * uint64(f[vhdOffGeometry+2]) * uint64(f[vhdOffGeometry+3]) * 512 // < 2^49: no overflow
	vsize = max(vsize, chs)
	if vsize > MaxVirtualSize {
		return Info{}, fmt.Errorf("%w: vhd size %d is implausible", ErrCorruptImage, vsize)
	}
	if binary.BigEndian.Uint32(f[vhdOffDiskType:]) == vhdDiskDynamic {
		off := binary.BigEndian.Uint64(f[vhdOffDataOffset:])
		d, err := im.read(off, vhdDynHeaderLen, "vhd dynamic header")
		if err != nil {
			return Info{}, err
		}
		if string(d[:8]) != "cxsparse" {
			return Info{}, fmt.Errorf("%w: vhd dynamic header has no signature", ErrCorruptImage)
		}
		if !allZero(d[vhdDynOffParentUUID:vhdDynOffParentUUID+16]) || !allZero(d[vhdDynOffParentName:vhdDynOffLocators]) ||
			!allZero(d[vhdDynOffLocators:vhdDynOffLocators+vhdDynLocatorsLen]) {
			return Info{}, fmt.Errorf("%w: vhd dynamic header names a parent disk", ErrUnsafeImage)
		}
	}
	return Info{Format: FormatVHD, VirtualSize: int64(vsize)}, nil
}

func allZero(b []byte) bool { return len(bytes.Trim(b, "\x00")) == 0 }

// VHDX structures (little-endian), per Microsoft's VHDX specification.
const (
	vhdxRegionTable1   = 192 << 10
	vhdxRegionTable2   = 256 << 10
	vhdxTableLen       = 64 << 10 // both the region table and the metadata table
	vhdxMaxEntries     = 2047
	vhdxMaxVirtualSize = 64 << 40 // the format's limit

	vhdxRegionMetadata   = "8B7CA206-4790-4B9A-B8FE-575F050F886E"
	vhdxItemFileParams   = "CAA16737-FA36-4D43-B3B6-33F0AA44E76B"
	vhdxItemVirtualSize  = "2FA54224-CD1B-4876-B211-5DBED83BF4B8"
	vhdxItemParentLocate = "A8D35F2D-B30B-454D-ABF7-D3D84834AB0C"
	vhdxHasParent        = 1 << 1 // in the File Parameters item's flags
)

// vhdxGUID is a GUID as VHDX stores it: the first three groups little-endian.
func vhdxGUID(s string) []byte {
	b, _ := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	g := bytes.Clone(b)
	g[0], g[1], g[2], g[3] = b[3], b[2], b[1], b[0]
	g[4], g[5] = b[5], b[4]
	g[6], g[7] = b[7], b[6]
	return g
}

// inspectVHDX checks a VHDX: the region table must name a metadata region whose items give the
// virtual size and file parameters, and neither a parent locator item nor the HasParent flag
// (a differencing disk) may be there. Both copies of the region table are checked when the
// second is valid, since a reader may use either.
func inspectVHDX(im image) (Info, error) {
	var vsize uint64
	for i, at := range []uint64{vhdxRegionTable1, vhdxRegionTable2} {
		meta, err := vhdxMetadataRegion(im, at)
		if err != nil {
			if i > 0 {
				continue
			}
			return Info{}, err
		}
		v, err := checkVHDXMetadata(im, meta)
		if err != nil {
			return Info{}, err
		}
		vsize = max(vsize, v)
	}
	return Info{Format: FormatVHDX, VirtualSize: int64(vsize)}, nil
}

// vhdxMetadataRegion reads the region table at off and returns the metadata region's offset.
func vhdxMetadataRegion(im image, off uint64) (uint64, error) {
	t, err := im.read(off, vhdxTableLen, "vhdx region table")
	if err != nil {
		return 0, err
	}
	if string(t[:4]) != "regi" {
		return 0, fmt.Errorf("%w: vhdx region table at %d has no signature", ErrCorruptImage, off)
	}
	n := binary.LittleEndian.Uint32(t[8:])
	if n > vhdxMaxEntries {
		return 0, fmt.Errorf("%w: vhdx region table has %d entries", ErrCorruptImage, n)
	}
	want := vhdxGUID(vhdxRegionMetadata)
	for i := range uint64(n) {
		e := t[16+i*32 : 16+i*32+32]
		if bytes.Equal(e[:16], want) {
			return binary.LittleEndian.Uint64(e[16:]), nil
		}
	}
	return 0, fmt.Errorf("%w: vhdx has no metadata region", ErrCorruptImage)
}

// checkVHDXMetadata reads the metadata table at off and returns the virtual size.
func checkVHDXMetadata(im image, off uint64) (uint64, error) {
	t, err := im.read(off, vhdxTableLen, "vhdx metadata table")
	if err != nil {
		return 0, err
	}
	if string(t[:8]) != "metadata" {
		return 0, fmt.Errorf("%w: vhdx metadata table has no signature", ErrCorruptImage)
	}
	n := uint64(binary.LittleEndian.Uint16(t[10:]))
	if n > vhdxMaxEntries {
		return 0, fmt.Errorf("%w: vhdx metadata table has %d entries", ErrCorruptImage, n)
	}
	item := func(e []byte, what string) ([]byte, error) {
		return im.read(off+uint64(binary.LittleEndian.Uint32(e[16:])), 8, what)
	}
	var vsize uint64
	var haveSize, haveParams bool
	for i := range n {
		e := t[32+i*32 : 32+i*32+32]
		switch {
		case bytes.Equal(e[:16], vhdxGUID(vhdxItemParentLocate)):
			return 0, fmt.Errorf("%w: vhdx has a parent locator (a differencing disk)", ErrUnsafeImage)
		case bytes.Equal(e[:16], vhdxGUID(vhdxItemFileParams)):
			b, err := item(e, "vhdx file parameters")
			if err != nil {
				return 0, err
			}
			if binary.LittleEndian.Uint32(b[4:])&vhdxHasParent != 0 {
				return 0, fmt.Errorf("%w: vhdx has a parent (a differencing disk)", ErrUnsafeImage)
			}
			haveParams = true
		case bytes.Equal(e[:16], vhdxGUID(vhdxItemVirtualSize)):
			b, err := item(e, "vhdx virtual disk size")
			if err != nil {
				return 0, err
			}
			vsize, haveSize = binary.LittleEndian.Uint64(b), true
		}
	}
	switch {
	case !haveParams || !haveSize:
		return 0, fmt.Errorf("%w: vhdx metadata lacks the file parameters or the virtual disk size", ErrCorruptImage)
	case vsize > min(vhdxMaxVirtualSize, MaxVirtualSize):
		return 0, fmt.Errorf("%w: vhdx virtual size %d is implausible", ErrCorruptImage, vsize)
	}
	return vsize, nil
}
