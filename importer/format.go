package importer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Format is a disk image format recognised from the bytes, never from what the uploader declared.
type Format string

// Formats Inspect recognises and may accept.
const (
	FormatRaw   Format = "raw"
	FormatQCOW2 Format = "qcow2"
	FormatVMDK  Format = "vmdk"
	FormatVHD   Format = "vhd"
	FormatVHDX  Format = "vhdx"
	FormatISO   Format = "iso"
)

// DefaultAllowedFormats is the allowlist a worker uses when none is configured: every format
// Inspect can accept.
func DefaultAllowedFormats() []Format {
	return []Format{FormatRaw, FormatQCOW2, FormatVMDK, FormatVHD, FormatVHDX, FormatISO}
}

// ParseFormats reads a comma-separated list of format names (the allowed-formats setting).
// Every name must be one Inspect can accept; an empty list is refused, since it would refuse
// every image.
func ParseFormats(s string) ([]Format, error) {
	var out []Format
	for _, p := range strings.Split(s, ",") {
		p = strings.ToLower(strings.TrimSpace(p))
		if p == "" {
			continue
		}
		f := Format(p)
		if !slices.Contains(DefaultAllowedFormats(), f) {
			return nil, fmt.Errorf("unknown disk format %q (known: raw, qcow2, vmdk, vhd, vhdx, iso)", p)
		}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no disk format allowed")
	}
	return out, nil
}

// FormatList writes formats as ParseFormats reads them.
func FormatList(formats []Format) string {
	names := make([]string, len(formats))
	for i, f := range formats {
		names[i] = string(f)
	}
	return strings.Join(names, ",")
}

// MaxVirtualSize is the largest virtual size Inspect believes (1 PiB): a header claiming more
// is corrupt, and every size computed from a header stays far from overflowing an int64.
const MaxVirtualSize = 1 << 50

// Sentinel errors of inspection.
var (
	// ErrUnsafeImage marks an image the converter must not open: one that would make it read
	// outside the image (backing files, external data files, extents or parents elsewhere),
	// or a format that is not imported at all.
	ErrUnsafeImage = errors.New("importer: unsafe image")
	// ErrCorruptImage marks a header that claims a format but cannot be parsed.
	ErrCorruptImage = errors.New("importer: corrupt image header")
)

// Info is what inspection learned about an image.
type Info struct {
	Format      Format
	VirtualSize int64 // bytes of disk the image describes; for raw and iso, the data size
}

// probeSize is how much of the image's start the signature checks look at; the ISO 9660
// signature sits at 32 KiB.
const probeSize = 64 << 10

// Inspect reads the image of size bytes through r and returns its format and virtual size,
// after the safety checks of that format: it refuses, with ErrUnsafeImage, anything that would
// make qemu-img open another file or that is a format not imported, and, with ErrCorruptImage,
// headers it cannot parse. Any other error is a failure of r. Every read is bounded and lies
// inside [0, size): how much Inspect reads does not depend on size.
//
// A fixed VHD has its footer only at the end and is reported as raw data with a footer.
func Inspect(r io.ReaderAt, size int64) (Info, error) {
	if size < 0 {
		return Info{}, fmt.Errorf("%w: negative image size %d", ErrCorruptImage, size)
	}
	im := image{r: r, size: size}
	head, err := im.upTo(0, probeSize, "image start")
	if err != nil {
		return Info{}, err
	}
	switch {
	case bytes.HasPrefix(head, []byte("QFI\xfb")):
		return inspectQCOW2(im)
	case bytes.HasPrefix(head, []byte("KDMV")):
		return inspectVMDK(im)
	case bytes.HasPrefix(head, []byte("conectix")):
		return inspectVHD(im)
	case bytes.HasPrefix(head, []byte("vhdxfile")):
		return inspectVHDX(im)
	}
	name, err := foreignFormat(im, head)
	if err != nil {
		return Info{}, err
	}
	if name != "" {
		return Info{}, fmt.Errorf("%w: the bytes are a %s image, a format that is not imported", ErrUnsafeImage, name)
	}
	if len(head) >= 32774 && string(head[32769:32774]) == "CD001" {
		return Info{Format: FormatISO, VirtualSize: size}, nil
	}
	return Info{Format: FormatRaw, VirtualSize: size}, nil
}

// foreignFormat names the format qemu-img's probing would see in bytes that none of the
// accepted formats claims, or returns "". Data found raw is renamed into place and never
// opened by qemu-img, so these images could not reach a host file here; they are refused all
// the same because the volume would keep a signature that any later tool (or a guest booted
// with format probing) reads as that format, following its references. Only signatures that
// qemu actually probes are listed: a raw disk can hold anything else at offset 0.
func foreignFormat(im image, head []byte) (string, error) {
	prefixes := []struct{ magic, name string }{
		{"QED\x00", "QED"},
		{"LUKS\xba\xbe", "LUKS"},
		{"COWD", "VMware 3 sparse (vmdk)"},
		{"WithoutFreeSpace", "Parallels"},
		{"WithouFreSpacExt", "Parallels"},
		{"Bochs Virtual HD Image", "Bochs"},
		{"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0", "cloop"},
		{"# Disk DescriptorFile", "vmdk descriptor"},
	}
	for _, p := range prefixes {
		if bytes.HasPrefix(head, []byte(p.magic)) {
			return p.name, nil
		}
	}
	// VirtualBox's signature word sits after the 64-byte text banner.
	if len(head) >= 68 && binary.LittleEndian.Uint32(head[64:]) == 0xbeda107f {
		return "VDI", nil
	}
	if vmdkDescriptorText(head[:min(len(head), 2048)]) {
		return "vmdk descriptor", nil
	}
	// A DMG keeps its "koly" trailer in the last 512 bytes.
	if im.size >= 512 {
		tail, err := im.read(uint64(im.size-512), 4, "dmg trailer")
		if err != nil {
			return "", err
		}
		if string(tail) == "koly" {
			return "DMG", nil
		}
	}
	return "", nil
}

// vmdkDescriptorText reports whether b starts like a text VMDK descriptor as qemu probes one:
// comment and blank lines, then a "version=" line.
func vmdkDescriptorText(b []byte) bool {
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte("\n"))
		t := bytes.TrimSpace(line)
		if len(t) == 0 || t[0] == '#' {
			continue
		}
		return bytes.HasPrefix(t, []byte("version="))
	}
	return false
}

// image reads an image through bounded, overflow-checked reads.
type image struct {
	r    io.ReaderAt
	size int64
}

// maxRead bounds any one read: the largest structure Inspect reads is a qcow2 header cluster
// (2 MiB).
const maxRead = 2 << 20

// read returns the n bytes at off, or ErrCorruptImage when they do not all lie in the image.
func (im image) read(off uint64, n uint64, what string) ([]byte, error) {
	if n > maxRead {
		return nil, fmt.Errorf("%w: %s of %d bytes is implausibly large", ErrCorruptImage, what, n)
	}
	// Compared without adding, so neither side can overflow.
	if off > uint64(im.size) || n > uint64(im.size)-off {
		return nil, fmt.Errorf("%w: %s (%d bytes at %d) lies past the end of the %d-byte image", ErrCorruptImage, what, n, off, im.size)
	}
	b := make([]byte, n)
	if m, err := im.r.ReadAt(b, int64(off)); m != len(b) {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("importer: read %s: %w", what, err)
	}
	return b, nil
}

// upTo reads at most n bytes at off, fewer when the image ends sooner (none past its end).
func (im image) upTo(off, n uint64, what string) ([]byte, error) {
	if off >= uint64(im.size) {
		return nil, nil
	}
	return im.read(off, min(n, uint64(im.size)-off), what)
}

// sectorsToBytes converts a count of 512-byte sectors, or fails when it exceeds limit bytes.
func sectorsToBytes(sectors, limit uint64) (uint64, bool) {
	if sectors > limit/512 {
		return 0, false
	}
	return sectors * 512, true
}
