package importer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// FuzzDetect checks what the import relies on for any bytes an uploader can send: Detect does
// not panic, every refusal is one of the two sentinels (the import maps them to UnsafeImage and
// CorruptImage), and every acceptance names a known format with a usable virtual size. The
// seed corpus is testdata/fuzz/FuzzDetect, written from detectSeeds (see TestFuzzDetectSeeds).
func FuzzDetect(f *testing.F) {
	f.Fuzz(func(t *testing.T, head []byte, size int64) {
		// The import hands Detect at most HeaderSize leading bytes and the image's whole size,
		// which is never less than what it read.
		if len(head) > HeaderSize {
			head = head[:HeaderSize]
		}
		if size < int64(len(head)) {
			size = int64(len(head))
		}
		info, err := Detect(head, size)
		if err != nil {
			if !errors.Is(err, ErrUnsafeImage) && !errors.Is(err, ErrCorruptImage) {
				t.Fatalf("error %v wraps neither ErrUnsafeImage nor ErrCorruptImage", err)
			}
			if info != (Info{}) {
				t.Fatalf("error %v returned with info %+v", err, info)
			}
			return
		}
		switch info.Format {
		case FormatRaw, FormatISO:
			if info.VirtualSize != size {
				t.Fatalf("%s: virtual size %d, want the data size %d", info.Format, info.VirtualSize, size)
			}
		case FormatQCOW2, FormatVMDK, FormatVHD, FormatVHDX:
			if info.VirtualSize < 0 {
				t.Fatalf("%s: negative virtual size %d", info.Format, info.VirtualSize)
			}
		default:
			t.Fatalf("unknown format %q", info.Format)
		}
	})
}

// writeSeedsEnv, set to 1, makes TestFuzzDetectSeeds (re)write the seed corpus files:
//
//	IMAGEVOL_WRITE_FUZZ_SEEDS=1 go test -tags pacific -run '^TestFuzzDetectSeeds$' ./importer/
const writeSeedsEnv = "IMAGEVOL_WRITE_FUZZ_SEEDS"

// TestFuzzDetectSeeds keeps the checked-in corpus equal to detectSeeds and checks that each seed
// is classified as intended, so a seed meant to be refused cannot silently turn into a pass.
func TestFuzzDetectSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDetect")
	write := os.Getenv(writeSeedsEnv) == "1"
	if write {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	names := map[string]bool{}
	for _, s := range detectSeeds() {
		if names[s.name] {
			t.Fatalf("seed %s listed twice", s.name)
		}
		names[s.name] = true
		path := filepath.Join(dir, s.name)
		want := fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\nint64(%d)\n", s.head, s.size)
		if write {
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, want) {
			t.Errorf("seed %s: corpus file missing or stale (err %v); rewrite with %s=1", s.name, err, writeSeedsEnv)
		}

		info, err := Detect(s.head, s.size)
		switch {
		case s.err != nil && !errors.Is(err, s.err):
			t.Errorf("seed %s: got %+v, %v; want %v", s.name, info, err, s.err)
		case s.err == nil && err != nil:
			t.Errorf("seed %s: %v; want %s of %d bytes", s.name, err, s.format, s.vsize)
		case s.err == nil && (info.Format != s.format || info.VirtualSize != s.vsize):
			t.Errorf("seed %s: got %s of %d bytes, want %s of %d", s.name, info.Format, info.VirtualSize, s.format, s.vsize)
		}
	}
}

// detectSeed is one corpus entry and what Detect must make of it: err, or format and vsize.
type detectSeed struct {
	name   string
	head   []byte
	size   int64
	format Format
	vsize  int64
	err    error
}

// Offsets of the qcow2 header beyond those format.go reads, per the QEMU qcow2 specification.
const (
	seedQcow2V2Len        = 72  // fixed part of a version 2 header
	seedQcow2V3Len        = 104 // fixed part of a version 3 header, recorded in header_length
	seedOffClusterBits    = 20
	seedOffRefcountOrder  = 96
	seedOffHeaderLength   = 100
	seedExtEnd            = 0x00000000
	seedExtBackingFormat  = 0xe2792aca
	seedExtFeatureNames   = 0x6803f857
	seedExtDataFile       = 0x44415441
	seedBackingName       = "/etc/shadow"
	seedImageSize         = 1 << 20 // the size of every seed image but raw and iso ones
	seedQcow2VirtualSize  = 1 << 30
	seedQcow2MaxPlausible = 1 << 50 // the largest virtual size format.go accepts
)

// seedQcow2 is a qcow2 header of the given version and virtual size, padded with zeros to n
// bytes (at least the fixed header), without extensions (an end marker on v3).
func seedQcow2(version uint32, vsize uint64, n int) []byte {
	h := make([]byte, max(n, seedQcow2V3Len+8))
	copy(h, "QFI\xfb")
	binary.BigEndian.PutUint32(h[qcow2OffVersion:], version)
	binary.BigEndian.PutUint32(h[seedOffClusterBits:], 16)
	binary.BigEndian.PutUint64(h[qcow2OffSize:], vsize)
	if version == 3 {
		binary.BigEndian.PutUint32(h[seedOffRefcountOrder:], 4)
		binary.BigEndian.PutUint32(h[seedOffHeaderLength:], seedQcow2V3Len)
	}
	return h[:max(n, seedQcow2V2Len)]
}

// withBacking sets the backing file fields to off and n and, if it fits, writes name at off.
func withBacking(h []byte, off uint64, n uint32, name string) []byte {
	binary.BigEndian.PutUint64(h[qcow2OffBackingOffset:], off)
	binary.BigEndian.PutUint32(h[qcow2OffBackingSize:], n)
	if off < uint64(len(h)) {
		copy(h[off:], name)
	}
	return h
}

// withExtensions writes header extensions (type, declared length, data) at the v3 header's end,
// each padded to 8 bytes as QEMU writes them, growing h as needed.
func withExtensions(h []byte, exts ...seedExt) []byte {
	off := seedQcow2V3Len
	for _, e := range exts {
		need := off + 8 + (len(e.data)+7)/8*8
		if need > len(h) {
			h = append(h, make([]byte, need-len(h))...)
		}
		binary.BigEndian.PutUint32(h[off:], e.typ)
		binary.BigEndian.PutUint32(h[off+4:], e.length)
		copy(h[off+8:], e.data)
		off = need
	}
	return h
}

type seedExt struct {
	typ, length uint32
	data        []byte
}

func ext(typ uint32, data string) seedExt { return seedExt{typ, uint32(len(data)), []byte(data)} }

func withIncompat(h []byte, bits uint64) []byte {
	binary.BigEndian.PutUint64(h[qcow2OffIncompatible:], bits)
	return h
}

func seedVMDK(sectors uint64, n int) []byte {
	h := make([]byte, max(n, 20))
	copy(h, "KDMV")
	binary.LittleEndian.PutUint32(h[4:], 1) // version
	binary.LittleEndian.PutUint64(h[12:], sectors)
	return h[:n]
}

func seedVHD(size uint64, n int) []byte {
	h := make([]byte, max(n, 56))
	copy(h, "conectix")
	binary.BigEndian.PutUint64(h[40:], size) // original size
	binary.BigEndian.PutUint64(h[48:], size) // current size
	return h[:n]
}

// seedISO puts an ISO 9660 primary volume descriptor at 32 KiB into n bytes of padding. The
// padding is spaces, not zeros, to keep the corpus file a quarter of the size.
func seedISO(n int) []byte {
	h := bytes.Repeat([]byte(" "), n)
	copy(h[32768:], "\x01CD001\x01")
	return h[:n]
}

func detectSeeds() []detectSeed {
	ok := func(name string, head []byte, format Format, vsize int64) detectSeed {
		return detectSeed{name: name, head: head, size: seedImageSize, format: format, vsize: vsize}
	}
	raw := func(name string, head []byte, size int64) detectSeed {
		return detectSeed{name: name, head: head, size: size, format: FormatRaw, vsize: size}
	}
	bad := func(name string, head []byte, err error) detectSeed {
		return detectSeed{name: name, head: head, size: seedImageSize, err: err}
	}
	qcow2 := func(name string, head []byte) detectSeed {
		return ok(name, head, FormatQCOW2, seedQcow2VirtualSize)
	}
	v2 := func() []byte { return seedQcow2(2, seedQcow2VirtualSize, 512) }
	v3 := func() []byte { return seedQcow2(3, seedQcow2VirtualSize, 512) }
	// Where a qcow2 image made by qemu-img keeps the backing file name: after the extensions.
	const backingAt = 0x170

	seeds := []detectSeed{
		// Plain images, and qcow2 v2 and v3 with and without a backing file.
		qcow2("qcow2-v2", v2()),
		qcow2("qcow2-v3", v3()),
		bad("qcow2-v2-backing", withBacking(v2(), backingAt, uint32(len(seedBackingName)), seedBackingName), ErrUnsafeImage),
		bad("qcow2-v3-backing", withBacking(v3(), backingAt, uint32(len(seedBackingName)), seedBackingName), ErrUnsafeImage),
		bad("qcow2-v3-backing-with-format-ext", withBacking(withExtensions(v3(), ext(seedExtBackingFormat, "raw"), ext(seedExtEnd, "")), backingAt, uint32(len(seedBackingName)), seedBackingName), ErrUnsafeImage),
		bad("qcow2-v1", seedQcow2(1, seedQcow2VirtualSize, 512), ErrCorruptImage),
		bad("qcow2-v4", seedQcow2(4, seedQcow2VirtualSize, 512), ErrCorruptImage),

		// A backing file whose name lies outside the header, or whose offset plus size
		// overflows 64 bits: still refused, and never a slice out of range.
		bad("qcow2-backing-offset-past-head", withBacking(v3(), 1<<20, uint32(len(seedBackingName)), ""), ErrUnsafeImage),
		bad("qcow2-backing-name-runs-past-head", withBacking(v3(), 505, uint32(len(seedBackingName)), seedBackingName), ErrUnsafeImage),
		bad("qcow2-backing-size-max", withBacking(v3(), backingAt, math.MaxUint32, seedBackingName), ErrUnsafeImage),
		bad("qcow2-backing-empty-name", withBacking(v3(), 512, 0, ""), ErrUnsafeImage),
		bad("qcow2-backing-offset-max", withBacking(v3(), math.MaxUint64, 1, ""), ErrUnsafeImage),
		bad("qcow2-backing-offset-wraps-into-head", withBacking(v3(), math.MaxUint64-23, 48, ""), ErrUnsafeImage),
		bad("qcow2-backing-offset-and-size-max", withBacking(v3(), math.MaxUint64, math.MaxUint32, ""), ErrUnsafeImage),
		bad("qcow2-backing-offset-2p63", withBacking(v3(), 1<<63, 16, ""), ErrUnsafeImage),

		// Virtual sizes at and beyond what is plausible, up to 2^64-1.
		ok("qcow2-vsize-max-plausible", seedQcow2(3, seedQcow2MaxPlausible, 512), FormatQCOW2, seedQcow2MaxPlausible),
		bad("qcow2-vsize-above-plausible", seedQcow2(3, seedQcow2MaxPlausible+1, 512), ErrCorruptImage),
		bad("qcow2-vsize-2p63-minus-1", seedQcow2(3, math.MaxInt64, 512), ErrCorruptImage),
		bad("qcow2-vsize-2p63", seedQcow2(3, 1<<63, 512), ErrCorruptImage),
		bad("qcow2-vsize-2p64-minus-1", seedQcow2(2, math.MaxUint64, 512), ErrCorruptImage),
		ok("qcow2-vsize-zero", seedQcow2(3, 0, 512), FormatQCOW2, 0),

		// External data files: the incompatible feature bit is what makes QEMU open the file
		// the data-file extension names; without the bit QEMU ignores the name.
		bad("qcow2-data-file-bit", withIncompat(v3(), qcow2IncompatDataFile), ErrUnsafeImage),
		bad("qcow2-data-file-bit-and-ext", withIncompat(withExtensions(v3(), ext(seedExtDataFile, "/dev/sda"), ext(seedExtEnd, "")), qcow2IncompatDataFile), ErrUnsafeImage),
		bad("qcow2-all-incompat-bits", withIncompat(v3(), math.MaxUint64), ErrUnsafeImage),
		qcow2("qcow2-data-file-ext-without-bit", withExtensions(v3(), ext(seedExtDataFile, "/dev/sda"), ext(seedExtEnd, ""))),
		qcow2("qcow2-v2-data-file-bit-ignored", withIncompat(v2(), qcow2IncompatDataFile)),

		// Header extension lists that are not well formed: Detect must not walk into them.
		qcow2("qcow2-ext-feature-names", withExtensions(v3(), ext(seedExtFeatureNames, "\x00\x00dirty bit"+string(make([]byte, 37))), ext(seedExtEnd, ""))),
		qcow2("qcow2-ext-length-wraps-to-itself", withExtensions(v3(), seedExt{seedExtFeatureNames, math.MaxUint32 - 7, nil})),
		qcow2("qcow2-ext-length-past-head", withExtensions(v3(), seedExt{seedExtBackingFormat, 1 << 20, []byte("raw")})),
		qcow2("qcow2-ext-no-end-marker", withExtensions(seedQcow2(3, seedQcow2VirtualSize, seedQcow2V3Len), ext(seedExtBackingFormat, "qcow2"), ext(seedExtBackingFormat, "qcow2"))),
		qcow2("qcow2-ext-header-length-max", func() []byte {
			h := v3()
			binary.BigEndian.PutUint32(h[seedOffHeaderLength:], math.MaxUint32)
			return h
		}()),
		qcow2("qcow2-ext-header-length-zero", func() []byte {
			h := v3()
			binary.BigEndian.PutUint32(h[seedOffHeaderLength:], 0)
			return h
		}()),

		// VMDK: a sparse extent is converted, a descriptor file is refused.
		ok("vmdk-sparse", seedVMDK(2097152, 512), FormatVMDK, 1<<30),
		ok("vmdk-sparse-minimal", seedVMDK(1, 20), FormatVMDK, 512),
		bad("vmdk-sparse-truncated", seedVMDK(1, 19), ErrCorruptImage),
		ok("vmdk-capacity-max", seedVMDK(math.MaxInt64/512, 512), FormatVMDK, math.MaxInt64/512*512),
		bad("vmdk-capacity-overflows", seedVMDK(math.MaxInt64/512+1, 512), ErrCorruptImage),
		bad("vmdk-capacity-2p64-minus-1", seedVMDK(math.MaxUint64, 512), ErrCorruptImage),
		bad("vmdk-descriptor", []byte("# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\nRW 2048 FLAT \"/etc/passwd\" 0\n"), ErrUnsafeImage),
		bad("vmdk-descriptor-header-only", []byte("# Disk DescriptorFile"), ErrUnsafeImage),

		// VHD: the footer copy at offset 0 of a dynamic disk.
		ok("vhd-dynamic", seedVHD(10<<30, 512), FormatVHD, 10<<30),
		ok("vhd-footer-minimal", seedVHD(1<<20, 56), FormatVHD, 1<<20),
		bad("vhd-footer-truncated", seedVHD(1<<20, 55), ErrCorruptImage),
		ok("vhd-size-2p63-minus-1", seedVHD(math.MaxInt64, 512), FormatVHD, math.MaxInt64),
		bad("vhd-size-2p63", seedVHD(1<<63, 512), ErrCorruptImage),
		bad("vhd-size-2p64-minus-1", seedVHD(math.MaxUint64, 512), ErrCorruptImage),

		// VHDX: its file type identifier.
		ok("vhdx", append([]byte("vhdxfile"), "\x00\x00i\x00m\x00a\x00g\x00e\x00v\x00o\x00l\x00"...), FormatVHDX, 0),
		ok("vhdx-signature-only", []byte("vhdxfile"), FormatVHDX, 0),
		raw("vhdx-signature-truncated", []byte("vhdxfil"), 7),

		// ISO 9660: "CD001" at 32 KiB + 1, which needs that many bytes of head.
		{name: "iso", head: seedISO(HeaderSize), size: 1 << 30, format: FormatISO, vsize: 1 << 30},
		{name: "iso-minimal-head", head: seedISO(32774), size: 32774, format: FormatISO, vsize: 32774},
		raw("iso-signature-truncated", seedISO(32773), 32773),

		// Raw: anything else, whatever the uploader declared.
		raw("raw-empty", nil, 0),
		raw("raw-text", []byte("hello, world\n"), 13),
		raw("raw-empty-of-large-image", nil, 1<<40),

		// Crashers the fuzzer found, as it wrote them (fixed in format.go).
		{name: "crasher-vmdk-capacity-overflow", head: []byte("KDMV00000000000000A0"), size: 1048507, err: ErrCorruptImage},
		{name: "crasher-vhd-size-overflow", head: []byte("conectix0000000000000000000000000000000000000000\x890000000"), size: 1048492, err: ErrCorruptImage},
		{name: "crasher-qcow2-backing-offset-overflow", head: []byte("QFI\xfb\x00\x00\x00\x03\xff\xff\xff\xff\xff\xff\xff\xe8\x00\x00\x000000000000000"), size: 1048601, err: ErrUnsafeImage},
	}

	// Every length a truncated qcow2 header can stop at that changes what Detect can read:
	// inside the magic, version, backing offset and size, virtual size, the v3 feature bits,
	// the v3 header length and the backing file name.
	v3Backing := withBacking(seedQcow2(3, seedQcow2VirtualSize, seedQcow2V3Len+8+len(seedBackingName)), seedQcow2V3Len+8, uint32(len(seedBackingName)), seedBackingName)
	for _, n := range []int{0, 1, 3, 4, 5, 7, 8, 12, 15, 16, 19, 20, 23, 24, 31, 32, 71, 72, 79, 80, 103, 104, 111, 112, 122, 123} {
		name := fmt.Sprintf("qcow2-v3-truncated-%03d", n)
		head := bytes.Clone(seedQcow2(3, seedQcow2VirtualSize, len(v3Backing))[:n])
		switch {
		case n < 4:
			seeds = append(seeds, raw(name, head, int64(n)))
		case n < qcow2OffIncompatible+8:
			seeds = append(seeds, bad(name, head, ErrCorruptImage))
		default:
			seeds = append(seeds, qcow2(name, head))
		}
		name = fmt.Sprintf("qcow2-v3-backing-truncated-%03d", n)
		head = bytes.Clone(v3Backing[:n])
		switch {
		case n < 4:
			seeds = append(seeds, raw(name, head, int64(n)))
		case n < 32:
			seeds = append(seeds, bad(name, head, ErrCorruptImage))
		default:
			seeds = append(seeds, bad(name, head, ErrUnsafeImage))
		}
	}
	for _, n := range []int{31, 32, 71, 72} {
		head := bytes.Clone(seedQcow2(2, seedQcow2VirtualSize, seedQcow2V2Len)[:n])
		if n < 32 {
			seeds = append(seeds, bad(fmt.Sprintf("qcow2-v2-truncated-%03d", n), head, ErrCorruptImage))
		} else {
			seeds = append(seeds, qcow2(fmt.Sprintf("qcow2-v2-truncated-%03d", n), head))
		}
	}
	return seeds
}
