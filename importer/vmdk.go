package importer

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
)

// VMDK sparse extent header fields (little-endian), per VMware's Virtual Disk Format 5.0.
const (
	vmdkHeaderLen     = 512
	vmdkOffVersion    = 4
	vmdkOffCapacity   = 12
	vmdkOffDescOffset = 28
	vmdkOffDescSize   = 36
	vmdkOffGDOffset   = 56
	// vmdkGDAtEnd in the grain directory offset says the real header is the footer near the
	// end of the file (stream-optimized images written in one pass).
	vmdkGDAtEnd = ^uint64(0)
	// vmdkMaxDescriptor bounds an embedded descriptor (QEMU reads at most 1 MiB of one).
	vmdkMaxDescriptor = 1 << 20
	// QEMU looks for parentFileNameHint in this many bytes from offset 512 of a sparse file,
	// whatever the header says about the descriptor.
	vmdkParentScanOffset = 512
	vmdkParentScanLen    = 20 * 512
)

// inspectVMDK checks a sparse VMDK (monolithicSparse or streamOptimized): a capacity above 0,
// an embedded descriptor that names exactly one extent, of type SPARSE, and no parent.
//
// A capacity of 0 with a descriptor makes QEMU open the extents the descriptor lists instead of
// the image itself (CVE-2024-32498): that is the first thing refused. With a capacity, QEMU
// reads the grains from this file only, but still follows a parentFileNameHint in the bytes at
// offset 512, so those are checked whatever the header says. The footer a stream-optimized
// image may use instead of its header gets the same checks.
func inspectVMDK(im image) (Info, error) {
	h, err := im.read(0, vmdkHeaderLen, "vmdk header")
	if err != nil {
		return Info{}, err
	}
	capacity, err := checkVMDKHeader(im, h, "header")
	if err != nil {
		return Info{}, err
	}
	if binary.LittleEndian.Uint64(h[vmdkOffGDOffset:]) == vmdkGDAtEnd {
		// The footer header sits 1024 bytes before the end (then an end-of-stream marker).
		if im.size < 1536 {
			return Info{}, fmt.Errorf("%w: vmdk footer missing", ErrCorruptImage)
		}
		f, err := im.read(uint64(im.size)-1024, vmdkHeaderLen, "vmdk footer")
		if err != nil {
			return Info{}, err
		}
		if string(f[:4]) != "KDMV" {
			return Info{}, fmt.Errorf("%w: vmdk footer has no signature", ErrCorruptImage)
		}
		if capacity, err = checkVMDKHeader(im, f, "footer"); err != nil {
			return Info{}, err
		}
	}
	scan, err := im.upTo(vmdkParentScanOffset, vmdkParentScanLen, "vmdk descriptor area")
	if err != nil {
		return Info{}, err
	}
	if bytes.Contains(bytes.ToLower(scan), []byte("parentfilenamehint")) {
		return Info{}, fmt.Errorf("%w: vmdk names a parent (parentFileNameHint)", ErrUnsafeImage)
	}
	return Info{Format: FormatVMDK, VirtualSize: int64(capacity)}, nil
}

// checkVMDKHeader checks one sparse header (the header or the footer) and its descriptor, and
// returns the capacity in bytes.
func checkVMDKHeader(im image, h []byte, which string) (uint64, error) {
	if v := binary.LittleEndian.Uint32(h[vmdkOffVersion:]); v < 1 || v > 3 {
		return 0, fmt.Errorf("%w: vmdk %s version %d", ErrCorruptImage, which, v)
	}
	sectors := binary.LittleEndian.Uint64(h[vmdkOffCapacity:])
	if sectors == 0 {
		return 0, fmt.Errorf("%w: vmdk %s has capacity 0, which makes qemu-img open the extents its descriptor names", ErrUnsafeImage, which)
	}
	capacity, ok := sectorsToBytes(sectors, MaxVirtualSize)
	if !ok {
		return 0, fmt.Errorf("%w: vmdk capacity of %d sectors is implausible", ErrCorruptImage, sectors)
	}
	descSectors := binary.LittleEndian.Uint64(h[vmdkOffDescOffset:])
	descLenSectors := binary.LittleEndian.Uint64(h[vmdkOffDescSize:])
	if descSectors == 0 || descLenSectors == 0 {
		return 0, fmt.Errorf("%w: vmdk %s has no embedded descriptor, so its layout cannot be checked", ErrUnsafeImage, which)
	}
	descLen, ok := sectorsToBytes(descLenSectors, vmdkMaxDescriptor)
	if !ok {
		return 0, fmt.Errorf("%w: vmdk descriptor of %d sectors is larger than %d bytes", ErrCorruptImage, descLenSectors, vmdkMaxDescriptor)
	}
	descOff, ok := sectorsToBytes(descSectors, uint64(im.size))
	if !ok {
		return 0, fmt.Errorf("%w: vmdk descriptor at sector %d lies past the end of the image", ErrCorruptImage, descSectors)
	}
	desc, err := im.read(descOff, descLen, "vmdk descriptor")
	if err != nil {
		return 0, err
	}
	if err := checkVMDKDescriptor(desc); err != nil {
		return 0, err
	}
	return capacity, nil
}

// checkVMDKDescriptor checks an embedded descriptor: createType monolithicSparse or
// streamOptimized, no parent, and exactly one extent line, "<access> <sectors> SPARSE
// "<name>"", where name is a plain file name (the image itself, as the writer called it).
//
// QEMU resolves an extent's name next to the image: for a file, in its directory; for an RBD
// image, QEMU 7.2 refuses relative names, but another version, or a copy of the image on a file
// system, would not. So no name can be trusted to mean the image itself, and the capacity check
// is what keeps QEMU from opening extents at all. The rules here go further, as oslo.utils'
// format_inspector does, so that the image stays unambiguous for any tool: a single SPARSE
// extent (never FLAT, VMFS, VMFSSPARSE, VMFSRDM, VMFSRAW, ZERO or a second extent), with no
// path separator or protocol colon in its name.
func checkVMDKDescriptor(desc []byte) error {
	// QEMU reads the descriptor as a C string.
	if i := bytes.IndexByte(desc, 0); i >= 0 {
		desc = desc[:i]
	}
	text := string(desc)
	if strings.Contains(strings.ToLower(text), "parentfilenamehint") {
		return fmt.Errorf("%w: vmdk names a parent (parentFileNameHint)", ErrUnsafeImage)
	}
	createType, extents := "", 0
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		switch strings.ToUpper(fields[0]) {
		case "RW", "RDONLY", "NOACCESS":
			extents++
			if err := checkVMDKExtent(line, fields); err != nil {
				return err
			}
			continue
		}
		if key, val, ok := strings.Cut(line, "="); ok && strings.EqualFold(strings.TrimSpace(key), "createType") {
			createType = strings.Trim(strings.TrimSpace(val), `"`)
		}
	}
	switch {
	case createType != "monolithicSparse" && createType != "streamOptimized":
		return fmt.Errorf("%w: vmdk createType %q (only monolithicSparse and streamOptimized are imported)", ErrUnsafeImage, createType)
	case extents != 1:
		return fmt.Errorf("%w: vmdk descriptor lists %d extents, want exactly 1", ErrUnsafeImage, extents)
	}
	return nil
}

// checkVMDKExtent checks one extent line: SPARSE, a quoted plain file name, nothing after it.
func checkVMDKExtent(line string, fields []string) error {
	if len(fields) < 4 || fields[2] != "SPARSE" {
		return fmt.Errorf("%w: vmdk extent %q is not a single SPARSE extent of this file", ErrUnsafeImage, line)
	}
	// The name is everything after the type, in double quotes.
	rest := strings.TrimSpace(line[strings.Index(line, fields[2])+len(fields[2]):])
	name, ok := strings.CutPrefix(rest, `"`)
	if ok {
		name, ok = strings.CutSuffix(name, `"`)
	}
	if !ok || name == "" || strings.ContainsAny(name, "\"/\\:") {
		return fmt.Errorf("%w: vmdk extent %q does not name a plain file", ErrUnsafeImage, line)
	}
	return nil
}
