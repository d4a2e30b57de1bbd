package importer

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

// paddedImage is head followed by zeros up to size bytes: a fuzz input can describe a large
// image (a footer near the end, a descriptor far in) in a few bytes. A read outside [0, size)
// fails with a non-sentinel error, which the fuzz target reports, and every byte read is
// counted.
type paddedImage struct {
	head []byte
	size int64
	read int64
}

func (p *paddedImage) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 || off > p.size || int64(len(b)) > p.size-off {
		return 0, fmt.Errorf("read of %d bytes at %d outside the %d-byte image", len(b), off, p.size)
	}
	p.read += int64(len(b))
	clear(b)
	if off < int64(len(p.head)) {
		copy(b, p.head[off:])
	}
	return len(b), nil
}

// maxInspectRead bounds what one inspection may read in all, whatever the image's size: two
// VHDX tables of each kind, a qcow2 header cluster, a VMDK descriptor per header and the
// probes are well below it.
const maxInspectRead = 8 << 20

// FuzzDetect checks what the import relies on for any bytes an uploader can send: Inspect does
// not panic, reads only inside the image and a bounded amount of it, every refusal is one of
// the two sentinels (the import maps them to UnsafeImage and CorruptImage), and every
// acceptance names a known format with a usable virtual size. The image is head padded with
// zeros to size. The seed corpus is testdata/fuzz/FuzzDetect plus every crafted case of
// format_test.go (their trailing zeros left to the padding).
func FuzzDetect(f *testing.F) {
	for _, c := range craftedCases() {
		f.Add(bytes.TrimRight(c.image, "\x00"), int64(len(c.image)))
	}
	f.Fuzz(func(t *testing.T, head []byte, size int64) {
		size = max(size, int64(len(head)))
		img := &paddedImage{head: head, size: size}
		info, err := Inspect(img, size)
		if img.read > maxInspectRead {
			t.Fatalf("read %d bytes of a %d-byte image", img.read, size)
		}
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
			if info.VirtualSize < 0 || info.VirtualSize > MaxVirtualSize {
				t.Fatalf("%s: virtual size %d outside [0, %d]", info.Format, info.VirtualSize, int64(MaxVirtualSize))
			}
		default:
			t.Fatalf("unknown format %q", info.Format)
		}
	})
}

// The crafted cases keep their verdict when their trailing zeros come from the padding, which
// is how the fuzz target sees them.
func TestCraftedCasesPadded(t *testing.T) {
	for _, c := range craftedCases() {
		img := &paddedImage{head: bytes.TrimRight(c.image, "\x00"), size: int64(len(c.image))}
		info, err := Inspect(img, img.size)
		want, wantErr := inspectBytes(c.image)
		if info != want || verdict(err) != verdict(wantErr) {
			t.Errorf("%s: padded %+v, %v; whole %+v, %v", c.name, info, err, want, wantErr)
		}
	}
}

func verdict(err error) string {
	switch {
	case err == nil:
		return "accepted"
	case errors.Is(err, ErrUnsafeImage):
		return "unsafe"
	case errors.Is(err, ErrCorruptImage):
		return "corrupt"
	}
	return err.Error()
}
