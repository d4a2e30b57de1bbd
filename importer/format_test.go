package importer

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagevol/imagevol/importer/testimages"
)

// inspectBytes inspects an in-memory image.
func inspectBytes(b []byte) (Info, error) {
	return Inspect(bytes.NewReader(b), int64(len(b)))
}

// Images written by qemu-img itself are accepted, with the virtual size qemu-img reports.
func TestInspectImagesOfQemuImg(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatal("qemu-img is a dependency of the worker and must be installed to test the inspector against it")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.raw")
	data := bytes.Repeat([]byte("imagevol"), 3<<17) // 3 MiB of data
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		args   []string // qemu-img convert options
		format Format
	}{
		{"qcow2 v3", []string{"-O", "qcow2"}, FormatQCOW2},
		{"qcow2 v2", []string{"-O", "qcow2", "-o", "compat=0.10"}, FormatQCOW2},
		{"qcow2 zstd", []string{"-O", "qcow2", "-o", "compression_type=zstd"}, FormatQCOW2},
		{"qcow2 extended l2", []string{"-O", "qcow2", "-o", "extended_l2=on,cluster_size=128k"}, FormatQCOW2},
		{"vmdk monolithicSparse", []string{"-O", "vmdk"}, FormatVMDK},
		{"vmdk streamOptimized", []string{"-O", "vmdk", "-o", "subformat=streamOptimized"}, FormatVMDK},
		{"vhd dynamic", []string{"-O", "vpc"}, FormatVHD},
		{"vhd fixed is raw data", []string{"-O", "vpc", "-o", "subformat=fixed"}, FormatRaw},
		{"vhdx", []string{"-O", "vhdx"}, FormatVHDX},
		{"raw", []string{"-O", "raw"}, FormatRaw},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "image")
			args := append(append([]string{"convert", "-f", "raw"}, tc.args...), src, out)
			if b, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img %v: %v: %s", args, err, b)
			}
			img, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			info, err := inspectBytes(img)
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			want := int64(len(img))
			if tc.format != FormatRaw {
				want = qemuVirtualSize(t, out)
			}
			if info.Format != tc.format || info.VirtualSize != want {
				t.Fatalf("got %s of %d bytes, want %s of %d", info.Format, info.VirtualSize, tc.format, want)
			}
		})
	}
}

func qemuVirtualSize(t *testing.T, path string) int64 {
	t.Helper()
	out, err := exec.Command("qemu-img", "info", "--output=json", path).Output()
	if err != nil {
		t.Fatalf("qemu-img info: %v", err)
	}
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatal(err)
	}
	return info.VirtualSize
}

// A qcow2 overlay qemu-img writes with a backing file is refused, and so is a qcow2 v1 (qcow)
// image it writes.
func TestInspectRefusesQemuImgOverlays(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(base, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, format string }{{"qcow2", "qcow2"}, {"qcow", "qcow"}, {"qed", "qed"}} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, tc.name)
			args := []string{"create", "-f", tc.format, "-b", base, "-F", "raw", out}
			if b, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img %v: %v: %s", args, err, b)
			}
			img, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if info, err := inspectBytes(img); !errors.Is(err, ErrUnsafeImage) {
				t.Fatalf("got %+v, %v; want ErrUnsafeImage", info, err)
			}
		})
	}
}

// A VHDX qemu-img wrote, made a differencing disk, is refused.
func TestInspectRefusesDifferencingVHDX(t *testing.T) {
	out := filepath.Join(t.TempDir(), "disk.vhdx")
	if b, err := exec.Command("qemu-img", "create", "-f", "vhdx", out, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, b)
	}
	img, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := inspectBytes(img); err != nil || info.Format != FormatVHDX || info.VirtualSize != 64<<20 {
		t.Fatalf("before: %+v, %v; want a vhdx of 64 MiB", info, err)
	}
	diff, err := testimages.MakeDifferencing(img, "/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	if info, err := inspectBytes(diff); !errors.Is(err, ErrUnsafeImage) {
		t.Fatalf("got %+v, %v; want ErrUnsafeImage", info, err)
	}
}

// inspectCase is a crafted image and what Inspect must make of it: err, or format and vsize.
type inspectCase struct {
	name   string
	image  []byte
	format Format
	vsize  int64
	err    error
}

// craftedCases are the images built in Go; the fuzz seeds include every one of them.
func craftedCases() []inspectCase {
	const host = "/etc/ceph/ceph.client.admin.keyring"
	desc := testimages.Descriptor
	ok := func(name string, image []byte, format Format, vsize int64) inspectCase {
		return inspectCase{name: name, image: image, format: format, vsize: vsize}
	}
	unsafe := func(name string, image []byte) inspectCase {
		return inspectCase{name: name, image: image, err: ErrUnsafeImage}
	}
	corrupt := func(name string, image []byte) inspectCase {
		return inspectCase{name: name, image: image, err: ErrCorruptImage}
	}
	sparse := desc("monolithicSparse", []string{testimages.SparseExtent(2048, "disk.vmdk")})
	vmdk := func(capacity uint64, d string) []byte {
		return testimages.VMDK{Capacity: capacity, Descriptor: d}.Bytes()
	}
	late := func(capacity uint64, d string, sector uint64) []byte {
		return testimages.VMDK{Capacity: capacity, Descriptor: d, DescSector: sector}.Bytes()
	}
	return []inspectCase{
		// VMDK: the exploit's shape (capacity 0, descriptor naming other files), wherever the
		// descriptor is, and every layout but one sparse extent of the image itself.
		ok("vmdk-sparse", vmdk(2048, sparse), FormatVMDK, 1<<20),
		ok("vmdk-stream-optimized", vmdk(2048, desc("streamOptimized", []string{testimages.SparseExtent(2048, "disk.vmdk")})), FormatVMDK, 1<<20),
		ok("vmdk-descriptor-late", late(2048, sparse, 300), FormatVMDK, 1<<20),
		unsafe("vmdk-cap0-flat-absolute", vmdk(0, desc("monolithicFlat", []string{testimages.FlatExtent(2048, host)}))),
		unsafe("vmdk-cap0-flat-relative", vmdk(0, desc("monolithicFlat", []string{testimages.FlatExtent(2048, "../../etc/passwd")}))),
		unsafe("vmdk-cap0-vmfs-absolute", vmdk(0, desc("vmfs", []string{testimages.VMFSExtent(2048, host)}))),
		unsafe("vmdk-cap0-flat-late", late(0, desc("monolithicFlat", []string{testimages.FlatExtent(2048, host)}), 200)),
		unsafe("vmdk-cap0-flat-past-64k", late(0, desc("monolithicFlat", []string{testimages.FlatExtent(2048, host)}), 1000)),
		unsafe("vmdk-cap0-sparse-self", vmdk(0, sparse)),
		unsafe("vmdk-flat-absolute", vmdk(2048, desc("monolithicFlat", []string{testimages.FlatExtent(2048, host)}))),
		unsafe("vmdk-flat-relative-late", late(2048, desc("monolithicSparse", []string{testimages.FlatExtent(2048, "other.img")}), 1000)),
		unsafe("vmdk-vmfs-relative", vmdk(2048, desc("monolithicSparse", []string{testimages.VMFSExtent(2048, "disk-flat.vmdk")}))),
		unsafe("vmdk-vmfssparse", vmdk(2048, desc("monolithicSparse", []string{`RW 2048 VMFSSPARSE "disk.vmdk"`}))),
		unsafe("vmdk-zero-extent", vmdk(2048, desc("monolithicSparse", []string{`RW 2048 ZERO`}))),
		unsafe("vmdk-two-extents", vmdk(2048, desc("monolithicSparse", []string{testimages.SparseExtent(1024, "disk.vmdk"), testimages.SparseExtent(1024, "disk.vmdk")}))),
		unsafe("vmdk-sparse-absolute-name", vmdk(2048, desc("monolithicSparse", []string{testimages.SparseExtent(2048, host)}))),
		unsafe("vmdk-sparse-relative-name", vmdk(2048, desc("monolithicSparse", []string{testimages.SparseExtent(2048, "../other.vmdk")}))),
		unsafe("vmdk-sparse-protocol-name", vmdk(2048, desc("monolithicSparse", []string{testimages.SparseExtent(2048, "rbd:volumes/volume-1")}))),
		unsafe("vmdk-lowercase-access", vmdk(2048, desc("monolithicSparse", []string{testimages.SparseExtent(2048, "disk.vmdk"), "rw 2048 FLAT \"/etc/passwd\" 0"}))),
		unsafe("vmdk-no-extent", vmdk(2048, desc("monolithicSparse", nil))),
		unsafe("vmdk-split", vmdk(2048, desc("twoGbMaxExtentSparse", []string{testimages.SparseExtent(2048, "disk-s001.vmdk")}))),
		unsafe("vmdk-monolithic-flat-type", vmdk(2048, desc("monolithicFlat", []string{testimages.SparseExtent(2048, "disk.vmdk")}))),
		unsafe("vmdk-parent-hint", vmdk(2048, desc("monolithicSparse", []string{testimages.SparseExtent(2048, "disk.vmdk")}, `parentFileNameHint="`+host+`"`))),
		unsafe("vmdk-parent-hint-at-512-only", func() []byte {
			// The header points the descriptor elsewhere; QEMU still reads the hint at 512.
			b := late(2048, sparse, 100)
			copy(b[512:], "parentFileNameHint=\""+host+"\"\n")
			return b
		}()),
		unsafe("vmdk-no-descriptor", testimages.VMDK{Capacity: 2048, DescSector: 1, DescSectors: 0}.Bytes()),
		unsafe("vmdk-descriptor-only", []byte(desc("monolithicFlat", []string{testimages.FlatExtent(2048, host)}))),
		unsafe("vmdk-descriptor-only-no-header-comment", []byte("version=1\ncreateType=\"monolithicFlat\"\nRW 2048 FLAT \""+host+"\" 0\n")),
		unsafe("vmdk-cowd", testimages.Signature("cowd")),
		corrupt("vmdk-descriptor-past-end", withLE64(vmdk(2048, sparse), 28, 1<<40)),
		corrupt("vmdk-descriptor-offset-overflows", withLE64(vmdk(2048, sparse), 28, 1<<63)),
		corrupt("vmdk-descriptor-too-large", withLE64(vmdk(2048, sparse), 36, 1<<62)),
		corrupt("vmdk-capacity-implausible", vmdk(1<<60, sparse)),

		// qcow2: backing files (also named beyond 64 KiB), external data files, features.
		ok("qcow2-v3", testimages.QCOW2{VirtualSize: 1 << 30}.Bytes(), FormatQCOW2, 1<<30),
		ok("qcow2-v2", testimages.QCOW2{Version: 2, VirtualSize: 1 << 30}.Bytes(), FormatQCOW2, 1<<30),
		ok("qcow2-dirty-zstd-extl2", testimages.QCOW2{VirtualSize: 1 << 30, Incompat: 1<<0 | 1<<3 | 1<<4}.Bytes(), FormatQCOW2, 1<<30),
		unsafe("qcow2-backing", testimages.QCOW2{VirtualSize: 1 << 30, BackingFile: host}.Bytes()),
		unsafe("qcow2-v2-backing", testimages.QCOW2{Version: 2, VirtualSize: 1 << 30, BackingFile: host}.Bytes()),
		unsafe("qcow2-backing-past-64k", testimages.QCOW2{VirtualSize: 1 << 30, BackingFile: host, BackingAt: 100 << 10}.Bytes()),
		unsafe("qcow2-backing-past-end", func() []byte {
			b := testimages.QCOW2{VirtualSize: 1 << 30, BackingFile: host, BackingAt: 100 << 10}.Bytes()
			return b[:1024]
		}()),
		unsafe("qcow2-data-file-bit", testimages.QCOW2{VirtualSize: 1 << 30, Incompat: 1 << 2}.Bytes()),
		unsafe("qcow2-data-file-bit-and-ext", testimages.QCOW2{VirtualSize: 1 << 30, Incompat: 1 << 2, DataFile: host}.Bytes()),
		unsafe("qcow2-data-file-ext", testimages.QCOW2{VirtualSize: 1 << 30, DataFile: host}.Bytes()),
		unsafe("qcow2-unknown-incompat", testimages.QCOW2{VirtualSize: 1 << 30, Incompat: 1 << 5}.Bytes()),
		unsafe("qcow2-all-incompat", testimages.QCOW2{VirtualSize: 1 << 30, Incompat: ^uint64(0)}.Bytes()),
		unsafe("qcow-v1", testimages.Signature("qcow")),
		corrupt("qcow2-corrupt-bit", testimages.QCOW2{VirtualSize: 1 << 30, Incompat: 1 << 1}.Bytes()),
		corrupt("qcow2-v4", testimages.QCOW2{Version: 4, VirtualSize: 1 << 30}.Bytes()),
		corrupt("qcow2-vsize-implausible", testimages.QCOW2{VirtualSize: 1<<50 + 1}.Bytes()),
		corrupt("qcow2-truncated", testimages.QCOW2{VirtualSize: 1 << 30}.Bytes()[:100]),

		// VHD and VHDX: differencing disks.
		ok("vhd-dynamic", testimages.VHD{Size: 64 << 20}.Bytes(), FormatVHD, 64<<20),
		unsafe("vhd-differencing", testimages.VHD{Size: 64 << 20, Differencing: true, ParentLocator: host}.Bytes()),
		unsafe("vhd-dynamic-with-parent-locator", testimages.VHD{Size: 64 << 20, ParentLocator: host}.Bytes()),
		ok("vhdx", testimages.VHDX{VirtualSize: 64 << 20}.Bytes(), FormatVHDX, 64<<20),
		unsafe("vhdx-parent-locator", testimages.VHDX{VirtualSize: 64 << 20, ParentLocator: host}.Bytes()),
		unsafe("vhdx-has-parent", testimages.VHDX{VirtualSize: 64 << 20, HasParent: true}.Bytes()),
		corrupt("vhdx-signature-only", append([]byte("vhdxfile"), make([]byte, 1<<20)...)),
		corrupt("vhdx-vsize-implausible", testimages.VHDX{VirtualSize: 1 << 60}.Bytes()),

		// Formats qemu-img probes that are not imported.
		unsafe("sig-qed", testimages.Signature("qed")),
		unsafe("sig-vdi", testimages.Signature("vdi")),
		unsafe("sig-luks", testimages.Signature("luks")),
		unsafe("sig-parallels", testimages.Signature("parallels")),
		unsafe("sig-bochs", testimages.Signature("bochs")),
		unsafe("sig-cloop", testimages.Signature("cloop")),
		unsafe("sig-dmg", testimages.Signature("dmg")),
		unsafe("sig-vmdk-descriptor", testimages.Signature("vmdk-descriptor")),

		// Raw: anything else, including text that only looks like a descriptor further on.
		ok("raw-zeros", make([]byte, 1<<20), FormatRaw, 1<<20),
		ok("raw-text", []byte("hello, world\n# Disk DescriptorFile\n"), FormatRaw, 35),
		ok("raw-empty", nil, FormatRaw, 0),
		ok("raw-comment-then-data", []byte("# notes\nboot\n"), FormatRaw, 13),
	}
}

// withLE64 sets the little-endian 64-bit field at off (a header field of a crafted image).
func withLE64(b []byte, off int, v uint64) []byte {
	binary.LittleEndian.PutUint64(b[off:], v)
	return b
}

func TestInspectCrafted(t *testing.T) {
	for _, tc := range craftedCases() {
		t.Run(tc.name, func(t *testing.T) {
			info, err := inspectBytes(tc.image)
			switch {
			case tc.err != nil && !errors.Is(err, tc.err):
				t.Fatalf("got %+v, %v; want %v", info, err, tc.err)
			case tc.err == nil && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.err == nil && (info.Format != tc.format || info.VirtualSize != tc.vsize):
				t.Fatalf("got %s of %d bytes, want %s of %d", info.Format, info.VirtualSize, tc.format, tc.vsize)
			}
		})
	}
}

// brokenStorage fails every read: a failure of the storage is neither sentinel, so the import
// retries instead of calling the image bad.
type brokenStorage struct{}

func (brokenStorage) ReadAt([]byte, int64) (int, error) { return 0, errors.New("rbd: read failed") }

func TestInspectReadFailure(t *testing.T) {
	_, err := Inspect(brokenStorage{}, 1<<20)
	if err == nil || errors.Is(err, ErrUnsafeImage) || errors.Is(err, ErrCorruptImage) || !strings.Contains(err.Error(), "rbd: read failed") {
		t.Fatalf("err = %v, want the reader's failure", err)
	}
}

func TestParseFormats(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		bad  bool
	}{
		{in: "raw, qcow2,vmdk,vhd,vhdx,iso", want: "raw,qcow2,vmdk,vhd,vhdx,iso"},
		{in: "QCOW2,raw,qcow2", want: "qcow2,raw"},
		{in: "raw,qed", bad: true},
		{in: " , ", bad: true},
		{in: "", bad: true},
	} {
		got, err := ParseFormats(tc.in)
		if tc.bad != (err != nil) || (!tc.bad && FormatList(got) != tc.want) {
			t.Errorf("ParseFormats(%q) = %v, %v; want %q (error: %v)", tc.in, got, err, tc.want, tc.bad)
		}
	}
}
