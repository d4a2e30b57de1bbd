package importer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Format is a disk image format recognised from the bytes, never from what the uploader declared.
type Format string

// Formats Detect recognises.
const (
	FormatRaw   Format = "raw"
	FormatQCOW2 Format = "qcow2"
	FormatVMDK  Format = "vmdk"
	FormatVHD   Format = "vhd"
	FormatVHDX  Format = "vhdx"
	FormatISO   Format = "iso"
)

// HeaderSize is how many leading bytes Detect needs to see (the ISO 9660 signature sits at 32 KiB).
const HeaderSize = 64 << 10

// Sentinel errors of inspection.
var (
	// ErrUnsafeImage marks an image that would make the converter read outside it: a qcow2 with
	// a backing file or an external data file.
	ErrUnsafeImage = errors.New("importer: unsafe image")
	// ErrCorruptImage marks a header that claims a format but cannot be parsed.
	ErrCorruptImage = errors.New("importer: corrupt image header")
)

// Info is what inspection learned about an image.
type Info struct {
	Format      Format
	VirtualSize int64 // bytes of disk the image describes; for raw and iso, the data size
}

// Detect inspects the first bytes of an image (HeaderSize or all of it if shorter) and its total
// size, and returns its format and virtual size. It rejects qcow2 images that reference other
// files. A VHD is recognised by its footer copy at offset 0 (dynamic and differencing disks);
// a fixed VHD has its footer only at the end and is reported as raw data with a footer.
func Detect(head []byte, size int64) (Info, error) {
	switch {
	case len(head) >= 4 && string(head[:4]) == "QFI\xfb":
		return qcow2Info(head)
	case len(head) >= 8 && string(head[:8]) == "vhdxfile":
		return Info{Format: FormatVHDX}, nil
	case len(head) >= 4 && string(head[:4]) == "KDMV":
		if len(head) < 20 {
			return Info{}, fmt.Errorf("%w: vmdk header truncated", ErrCorruptImage)
		}
		// capacity is in 512-byte sectors at offset 12; in bytes it must fit an int64.
		sectors := binary.LittleEndian.Uint64(head[12:20])
		if sectors > math.MaxInt64/512 {
			return Info{}, fmt.Errorf("%w: vmdk capacity of %d sectors is implausible", ErrCorruptImage, sectors)
		}
		return Info{Format: FormatVMDK, VirtualSize: int64(sectors) * 512}, nil
	case bytes.HasPrefix(head, []byte("# Disk DescriptorFile")):
		// A descriptor-only VMDK points at extent files elsewhere: never follow it.
		return Info{}, fmt.Errorf("%w: vmdk descriptor file references external extents", ErrUnsafeImage)
	case len(head) >= 8 && string(head[:8]) == "conectix":
		if len(head) < 56 {
			return Info{}, fmt.Errorf("%w: vhd footer truncated", ErrCorruptImage)
		}
		// current size in bytes at offset 48; it must fit an int64.
		vsize := binary.BigEndian.Uint64(head[48:56])
		if vsize > math.MaxInt64 {
			return Info{}, fmt.Errorf("%w: vhd size %d is implausible", ErrCorruptImage, vsize)
		}
		return Info{Format: FormatVHD, VirtualSize: int64(vsize)}, nil
	case len(head) >= 32774 && string(head[32769:32774]) == "CD001":
		return Info{Format: FormatISO, VirtualSize: size}, nil
	}
	return Info{Format: FormatRaw, VirtualSize: size}, nil
}

// qcow2 header fields (big-endian), per the QEMU qcow2 specification.
const (
	qcow2OffVersion       = 4
	qcow2OffBackingOffset = 8
	qcow2OffBackingSize   = 16
	qcow2OffSize          = 24
	qcow2OffIncompatible  = 72
	qcow2IncompatDataFile = 1 << 2
)

func qcow2Info(head []byte) (Info, error) {
	if len(head) < 32 {
		return Info{}, fmt.Errorf("%w: qcow2 header truncated", ErrCorruptImage)
	}
	version := binary.BigEndian.Uint32(head[qcow2OffVersion:])
	if version != 2 && version != 3 {
		return Info{}, fmt.Errorf("%w: qcow2 version %d", ErrCorruptImage, version)
	}
	if off := binary.BigEndian.Uint64(head[qcow2OffBackingOffset:]); off != 0 {
		name := ""
		// Name it only if it lies inside head; off+n may overflow, so compare without adding.
		if n := binary.BigEndian.Uint32(head[qcow2OffBackingSize:]); off <= uint64(len(head)) && uint64(n) <= uint64(len(head))-off {
			name = string(head[off : off+uint64(n)])
		}
		return Info{}, fmt.Errorf("%w: qcow2 has a backing file %q", ErrUnsafeImage, name)
	}
	if version == 3 {
		if len(head) < qcow2OffIncompatible+8 {
			return Info{}, fmt.Errorf("%w: qcow2 v3 header truncated", ErrCorruptImage)
		}
		if binary.BigEndian.Uint64(head[qcow2OffIncompatible:])&qcow2IncompatDataFile != 0 {
			return Info{}, fmt.Errorf("%w: qcow2 has an external data file", ErrUnsafeImage)
		}
	}
	vsize := binary.BigEndian.Uint64(head[qcow2OffSize:])
	if vsize > 1<<50 {
		return Info{}, fmt.Errorf("%w: qcow2 virtual size %d is implausible", ErrCorruptImage, vsize)
	}
	return Info{Format: FormatQCOW2, VirtualSize: int64(vsize)}, nil
}
