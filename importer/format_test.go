package importer

import (
	"encoding/binary"
	"errors"
	"testing"
)

func qcow2Header(version uint32, backingOff uint64, incompat uint64, vsize uint64) []byte {
	h := make([]byte, 4096)
	copy(h, "QFI\xfb")
	binary.BigEndian.PutUint32(h[4:], version)
	binary.BigEndian.PutUint64(h[8:], backingOff)
	if backingOff != 0 {
		name := "/etc/shadow"
		binary.BigEndian.PutUint32(h[16:], uint32(len(name)))
		copy(h[backingOff:], name)
	}
	binary.BigEndian.PutUint64(h[24:], vsize)
	binary.BigEndian.PutUint64(h[72:], incompat)
	return h
}

func TestDetect(t *testing.T) {
	iso := make([]byte, HeaderSize)
	copy(iso[32769:], "CD001")
	vhd := make([]byte, 512)
	copy(vhd, "conectix")
	binary.BigEndian.PutUint64(vhd[48:], 10<<30)
	vmdk := make([]byte, 512)
	copy(vmdk, "KDMV")
	binary.LittleEndian.PutUint64(vmdk[12:], 2097152) // sectors: 1 GiB

	for _, tc := range []struct {
		name   string
		head   []byte
		size   int64
		format Format
		vsize  int64
		err    error
	}{
		{"raw zeros", make([]byte, 4096), 1 << 20, FormatRaw, 1 << 20, nil},
		{"raw declared anything", []byte("hello world"), 11, FormatRaw, 11, nil},
		{"qcow2 v3", qcow2Header(3, 0, 0, 5<<30), 1 << 20, FormatQCOW2, 5 << 30, nil},
		{"qcow2 v2", qcow2Header(2, 0, 0, 1<<30), 1 << 20, FormatQCOW2, 1 << 30, nil},
		{"qcow2 backing file", qcow2Header(3, 512, 0, 1<<30), 1 << 20, "", 0, ErrUnsafeImage},
		{"qcow2 external data file", qcow2Header(3, 0, 1<<2, 1<<30), 1 << 20, "", 0, ErrUnsafeImage},
		{"qcow2 bad version", qcow2Header(9, 0, 0, 1<<30), 1 << 20, "", 0, ErrCorruptImage},
		{"qcow2 truncated", []byte("QFI\xfb\x00\x00"), 6, "", 0, ErrCorruptImage},
		{"qcow2 huge", qcow2Header(3, 0, 0, 1<<62), 1 << 20, "", 0, ErrCorruptImage},
		{"vhdx", []byte("vhdxfile........"), 1 << 20, FormatVHDX, 0, nil},
		{"vhd dynamic", vhd, 1 << 20, FormatVHD, 10 << 30, nil},
		{"vmdk sparse", vmdk, 1 << 20, FormatVMDK, 1 << 30, nil},
		{"vmdk descriptor", []byte("# Disk DescriptorFile\nRW 100 FLAT \"/etc/passwd\" 0"), 100, "", 0, ErrUnsafeImage},
		{"iso", iso, 1 << 30, FormatISO, 1 << 30, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info, err := Detect(tc.head, tc.size)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if info.Format != tc.format || info.VirtualSize != tc.vsize {
				t.Fatalf("got %s/%d, want %s/%d", info.Format, info.VirtualSize, tc.format, tc.vsize)
			}
		})
	}
}
