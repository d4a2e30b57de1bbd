// Package testimages builds crafted disk images for the tests of the importer and of the whole
// engine: headers that reference other files (the known ways to make a converter read a file of
// its host), differencing disks, and signatures of formats that are not imported. Each builder
// writes only what the format needs for QEMU (and the inspector) to take it for what it claims.
package testimages

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
)

// QCOW2 describes a qcow2 header to build.
type QCOW2 struct {
	Version     uint32 // 2 or 3 (or anything, to test refusals); 0 means 3
	VirtualSize uint64
	// BackingFile, when set, is written at BackingAt (0: right after the header) and named by
	// the header.
	BackingFile string
	BackingAt   uint64
	Incompat    uint64 // incompatible feature bits (version 3)
	// DataFile, when set, is a data-file header extension naming it.
	DataFile string
	Size     int // bytes of the image, zero-padded; 0 means three 64 KiB clusters
}

// Bytes is the image.
func (q QCOW2) Bytes() []byte {
	version := q.Version
	if version == 0 {
		version = 3
	}
	size := q.Size
	if size == 0 {
		size = 3 << 16
	}
	at := q.BackingAt
	if at == 0 {
		at = 0x200
	}
	if q.BackingFile != "" {
		size = max(size, int(at)+len(q.BackingFile))
	}
	b := make([]byte, size)
	be := binary.BigEndian
	copy(b, "QFI\xfb")
	be.PutUint32(b[4:], version)
	be.PutUint32(b[20:], 16) // 64 KiB clusters
	be.PutUint64(b[24:], q.VirtualSize)
	be.PutUint32(b[36:], 1)     // L1 entries
	be.PutUint64(b[40:], 3<<16) // L1 table offset
	be.PutUint64(b[48:], 1<<16) // refcount table offset
	be.PutUint32(b[56:], 1)     // refcount table clusters
	ext := 72
	if version >= 3 {
		be.PutUint64(b[72:], q.Incompat)
		be.PutUint32(b[96:], 4)    // refcount order
		be.PutUint32(b[100:], 104) // header length
		ext = 104
	}
	if q.DataFile != "" {
		be.PutUint32(b[ext:], 0x44415441)
		be.PutUint32(b[ext+4:], uint32(len(q.DataFile)))
		copy(b[ext+8:], q.DataFile)
		ext += 8 + (len(q.DataFile)+7)/8*8
	}
	be.PutUint32(b[ext:], 0) // end of extensions
	if q.BackingFile != "" {
		be.PutUint64(b[8:], at)
		be.PutUint32(b[16:], uint32(len(q.BackingFile)))
		copy(b[at:], q.BackingFile)
	}
	return b
}

// VMDK describes a sparse VMDK (KDMV header) with an embedded descriptor.
type VMDK struct {
	Capacity   uint64 // sectors; 0 is the exploit's: QEMU then opens the descriptor's extents
	Descriptor string // the embedded descriptor's text
	// DescSector is where the descriptor sits (0 means sector 1, where writers put it) and
	// DescSectors how many sectors the header says it has (0: enough for the text).
	DescSector  uint64
	DescSectors uint64
	Size        int // bytes of the image, zero-padded; 0: just past the descriptor
}

// Bytes is the image.
func (v VMDK) Bytes() []byte {
	at := v.DescSector
	if at == 0 {
		at = 1
	}
	n := v.DescSectors
	if n == 0 {
		n = uint64(len(v.Descriptor)+511) / 512
	}
	size := max(v.Size, int(at+n)*512, 1024)
	b := make([]byte, size)
	le := binary.LittleEndian
	copy(b, "KDMV")
	le.PutUint32(b[4:], 1) // version
	le.PutUint32(b[8:], 3) // flags: valid newline test, redundant grain table
	le.PutUint64(b[12:], v.Capacity)
	le.PutUint64(b[20:], 128) // grain size: 64 KiB
	le.PutUint64(b[28:], at)
	le.PutUint64(b[36:], n)
	le.PutUint32(b[44:], 512) // grain table entries
	b[73], b[74], b[75], b[76] = '\n', ' ', '\r', '\n'
	copy(b[at*512:], v.Descriptor)
	return b
}

// Descriptor is a VMDK descriptor text of the given create type and extent lines, with extra
// lines (such as a parentFileNameHint) after the header keys.
func Descriptor(createType string, extents []string, extra ...string) string {
	var s strings.Builder
	s.WriteString("# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n")
	fmt.Fprintf(&s, "createType=%q\n", createType)
	for _, e := range extra {
		s.WriteString(e + "\n")
	}
	s.WriteString("\n# Extent description\n")
	for _, e := range extents {
		s.WriteString(e + "\n")
	}
	s.WriteString("\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\nddb.adapterType = \"ide\"\n")
	return s.String()
}

// FlatExtent is an extent line that makes QEMU read sectors of path (from offset 0).
func FlatExtent(sectors int, path string) string {
	return fmt.Sprintf("RW %d FLAT %q 0", sectors, path)
}

// VMFSExtent is an extent line of a VMFS flat file at path.
func VMFSExtent(sectors int, path string) string { return fmt.Sprintf("RW %d VMFS %q", sectors, path) }

// SparseExtent is the extent line a monolithicSparse image names itself with.
func SparseExtent(sectors int, name string) string {
	return fmt.Sprintf("RW %d SPARSE %q", sectors, name)
}

// VHD describes a dynamic (or differencing) VHD: footer copy, dynamic header, footer.
type VHD struct {
	Size uint64 // virtual size in bytes
	// Differencing makes it disk type 4; ParentLocator fills a parent locator entry and the
	// parent's UUID and name in the dynamic header.
	Differencing  bool
	ParentLocator string
}

// Bytes is the image.
func (v VHD) Bytes() []byte {
	be := binary.BigEndian
	footer := make([]byte, 512)
	copy(footer, "conectix")
	be.PutUint32(footer[8:], 2)           // features: reserved bit
	be.PutUint32(footer[12:], 0x00010000) // version
	be.PutUint64(footer[16:], 512)        // dynamic header offset
	copy(footer[28:], "qemu")
	copy(footer[36:], "Wi2k")
	be.PutUint64(footer[40:], v.Size)
	be.PutUint64(footer[48:], v.Size)
	diskType := uint32(3)
	if v.Differencing {
		diskType = 4
	}
	be.PutUint32(footer[60:], diskType)
	be.PutUint32(footer[64:], ^checksum(footer))

	dyn := make([]byte, 1024)
	copy(dyn, "cxsparse")
	be.PutUint64(dyn[8:], ^uint64(0))
	be.PutUint64(dyn[16:], 1536) // block allocation table
	be.PutUint32(dyn[24:], 0x00010000)
	blocks := (v.Size + 2<<20 - 1) / (2 << 20)
	be.PutUint32(dyn[28:], uint32(blocks))
	be.PutUint32(dyn[32:], 2<<20)
	if v.ParentLocator != "" {
		copy(dyn[40:], "0123456789abcdef") // parent UUID
		for i, r := range v.ParentLocator {
			if 64+2*i+1 < 576 {
				be.PutUint16(dyn[64+2*i:], uint16(r))
			}
		}
		copy(dyn[576:], "W2ku")
		be.PutUint32(dyn[580:], 512)
		be.PutUint32(dyn[584:], uint32(len(v.ParentLocator)))
		be.PutUint64(dyn[592:], 1536+((blocks*4+511)/512)*512)
	}
	be.PutUint32(dyn[36:], ^checksum(dyn))

	bat := bytes.Repeat([]byte{0xff}, int((blocks*4+511)/512*512))
	out := append(append(append(bytes.Clone(footer), dyn...), bat...), make([]byte, 512)...)
	if v.ParentLocator != "" {
		copy(out[len(out)-512:], v.ParentLocator)
	}
	return append(out, footer...)
}

func checksum(b []byte) uint32 {
	var s uint32
	for _, c := range b {
		s += uint32(c)
	}
	return s
}

// VHDX describes a VHDX with a region table and metadata region.
type VHDX struct {
	VirtualSize uint64
	// HasParent sets the differencing flag of the file parameters; ParentLocator adds a parent
	// locator metadata item naming that path.
	HasParent     bool
	ParentLocator string
}

// VHDX GUIDs, per Microsoft's VHDX specification.
const (
	vhdxRegionBAT       = "2DC27766-F623-4200-9D64-115E9BFD4A08"
	vhdxRegionMetadata  = "8B7CA206-4790-4B9A-B8FE-575F050F886E"
	vhdxFileParameters  = "CAA16737-FA36-4D43-B3B6-33F0AA44E76B"
	vhdxVirtualDiskSize = "2FA54224-CD1B-4876-B211-5DBED83BF4B8"
	vhdxLogicalSector   = "8141BF1D-A96F-4709-BA47-F233A8FAAB5F"
	vhdxPhysicalSector  = "CDA348C7-445D-4471-9CC9-E9885251C556"
	vhdxPage83          = "BECA12AB-B2E6-4523-93EF-C309E000C746"
	vhdxParentLocator   = "A8D35F2D-B30B-454D-ABF7-D3D84834AB0C"
)

func guid(s string) []byte {
	b, _ := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	g := bytes.Clone(b)
	g[0], g[1], g[2], g[3] = b[3], b[2], b[1], b[0]
	g[4], g[5] = b[5], b[4]
	g[6], g[7] = b[7], b[6]
	return g
}

// Bytes is the image: headers, the metadata region at 320 KiB (right after the region tables,
// which keeps the image mostly zeros at its end), the BAT at 2 MiB.
func (v VHDX) Bytes() []byte {
	le := binary.LittleEndian
	b := make([]byte, 3<<20)
	copy(b, "vhdxfile")
	for _, at := range []int{64 << 10, 128 << 10} {
		h := b[at:]
		copy(h, "head")
		le.PutUint64(h[8:], uint64(at>>16)) // sequence number
		le.PutUint16(h[66:], 1)             // version
		le.PutUint32(h[68:], 1<<20)         // log length
		le.PutUint64(h[72:], 1<<20)         // log offset
	}
	for _, at := range []int{192 << 10, 256 << 10} {
		t := b[at:]
		copy(t, "regi")
		le.PutUint32(t[8:], 2)
		copy(t[16:], guid(vhdxRegionBAT))
		le.PutUint64(t[32:], 2<<20)
		le.PutUint32(t[40:], 1<<20)
		le.PutUint32(t[44:], 1)
		copy(t[48:], guid(vhdxRegionMetadata))
		le.PutUint64(t[64:], 320<<10)
		le.PutUint32(t[72:], 1<<20)
		le.PutUint32(t[76:], 1)
	}
	m := b[320<<10:]
	copy(m, "metadata")
	type item struct {
		id   string
		data []byte
	}
	params := make([]byte, 8)
	le.PutUint32(params, 32<<20)
	if v.HasParent {
		le.PutUint32(params[4:], 2)
	}
	vsize := make([]byte, 8)
	le.PutUint64(vsize, v.VirtualSize)
	sector := make([]byte, 4)
	le.PutUint32(sector, 512)
	items := []item{{vhdxFileParameters, params}, {vhdxVirtualDiskSize, vsize}, {vhdxPage83, make([]byte, 16)},
		{vhdxLogicalSector, sector}, {vhdxPhysicalSector, sector}}
	if v.ParentLocator != "" {
		loc := make([]byte, 20)
		copy(loc, guid("B04AEFB7-D19E-4A81-B789-25B8E9445913"))
		le.PutUint16(loc[18:], 1)
		var val []byte
		for _, r := range v.ParentLocator {
			val = le.AppendUint16(val, uint16(r))
		}
		key := []byte{'a', 0, 'b', 0, 's', 0, 'o', 0, 'l', 0, 'u', 0, 't', 0, 'e', 0, '_', 0, 'w', 0, 'i', 0, 'n', 0, '3', 0, '2', 0, '_', 0, 'p', 0, 'a', 0, 't', 0, 'h', 0}
		entry := make([]byte, 12)
		le.PutUint32(entry, 20+12)
		le.PutUint32(entry[4:], uint32(20+12+len(key)))
		le.PutUint16(entry[8:], uint16(len(key)))
		le.PutUint16(entry[10:], uint16(len(val)))
		loc = append(append(append(loc, entry...), key...), val...)
		items = append(items, item{vhdxParentLocator, loc})
	}
	le.PutUint16(m[10:], uint16(len(items)))
	off := 64 << 10
	for i, it := range items {
		e := m[32+i*32:]
		copy(e, guid(it.id))
		le.PutUint32(e[16:], uint32(off))
		le.PutUint32(e[20:], uint32(len(it.data)))
		le.PutUint32(e[24:], 4) // required
		copy(m[off:], it.data)
		off += (len(it.data) + 7) / 8 * 8
	}
	return b
}

// Signature is the start of an image of a format that is not imported, as qemu-img's probing
// recognises it: "qcow" (version 1), "qed", "vdi", "luks", "parallels", "bochs", "cloop",
// "dmg" (a trailer at the end), "cowd" (VMware 3 sparse), "vmdk-descriptor".
func Signature(format string) []byte {
	b := make([]byte, 1<<20)
	switch format {
	case "qcow":
		copy(b, "QFI\xfb\x00\x00\x00\x01")
	case "qed":
		copy(b, "QED\x00")
	case "vdi":
		copy(b, "<<< Oracle VM VirtualBox Disk Image >>>\n")
		binary.LittleEndian.PutUint32(b[64:], 0xbeda107f)
	case "luks":
		copy(b, "LUKS\xba\xbe\x00\x01")
	case "parallels":
		copy(b, "WithoutFreeSpace")
	case "bochs":
		copy(b, "Bochs Virtual HD Image\x00")
	case "cloop":
		copy(b, "#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n")
	case "dmg":
		copy(b[len(b)-512:], "koly")
	case "cowd":
		copy(b, "COWD")
	case "vmdk-descriptor":
		copy(b, Descriptor("monolithicFlat", []string{FlatExtent(2048, "disk-flat.vmdk")}))
	default:
		panic("testimages: no signature for " + format)
	}
	return b
}

// MakeDifferencing turns a VHDX written by qemu-img into a differencing disk without touching
// its checksummed headers and region table: it sets HasParent in the file parameters and
// turns the page 83 metadata entry into a parent locator whose (16-byte) data holds the start
// of parent. b is changed in place.
func MakeDifferencing(b []byte, parent string) ([]byte, error) {
	le := binary.LittleEndian
	const regionTable = 192 << 10
	if len(b) < regionTable+(64<<10) || string(b[regionTable:regionTable+4]) != "regi" {
		return nil, fmt.Errorf("testimages: not a VHDX region table")
	}
	var meta uint64
	for i := range int(le.Uint32(b[regionTable+8:])) {
		e := b[regionTable+16+i*32:]
		if bytes.Equal(e[:16], guid(vhdxRegionMetadata)) {
			meta = le.Uint64(e[16:])
		}
	}
	if meta == 0 || uint64(len(b)) < meta+(64<<10) || string(b[meta:meta+8]) != "metadata" {
		return nil, fmt.Errorf("testimages: no VHDX metadata region")
	}
	m := b[meta:]
	for i := range int(le.Uint16(m[10:])) {
		e := m[32+i*32:]
		switch {
		case bytes.Equal(e[:16], guid(vhdxFileParameters)):
			off := le.Uint32(e[16:])
			le.PutUint32(m[off+4:], le.Uint32(m[off+4:])|2)
		case bytes.Equal(e[:16], guid(vhdxPage83)):
			copy(e, guid(vhdxParentLocator))
			off, n := le.Uint32(e[16:]), le.Uint32(e[20:])
			copy(m[off:off+n], parent)
		}
	}
	return b, nil
}
