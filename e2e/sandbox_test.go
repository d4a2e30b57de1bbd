//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/temporal"

	"github.com/imagevol/imagevol/activities"
	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/storage"
)

// converterConfig is a host that converts as the worker's own Ceph client when the stack names
// one (client.imagevol, rbd profile on the pools), else as the tests' client.
func converterConfig(name string, sandboxed bool) activities.Config {
	cfg := hostConfig(name)
	cfg.CephUser, cfg.CephKeyring = os.Getenv("IMAGEVOL_CEPH_USER"), os.Getenv("IMAGEVOL_CEPH_KEYRING")
	cfg.MaxConcurrentConversions = 2
	cfg.SandboxDisabled = !sandboxed
	return cfg
}

// putStaging writes data into a new RBD image of the pool, bypassing Glance and the format
// inspector, as an import's staging image holds it; the image goes when the test ends.
func putStaging(t *testing.T, name string, data []byte) {
	t.Helper()
	ctx := context.Background()
	size := uint64((int64(len(data)) + mib - 1) / mib * mib)
	if err := stack.ceph.Create(ctx, stack.pool, name, size); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeImage(name) })
	w, err := stack.ceph.OpenWriter(ctx, stack.pool, name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func removeImage(name string) {
	if _, err := stack.ceph.Remove(context.Background(), stack.pool, name); err != nil && !errors.Is(err, storage.ErrNotFound) {
		fmt.Fprintf(os.Stderr, "remove %s: %v\n", name, err)
	}
}

// readImage reads a whole RBD image of the pool; a missing image is nil.
func readImage(t *testing.T, name string) []byte {
	t.Helper()
	r, err := stack.ceph.OpenReader(context.Background(), stack.pool, name, "")
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b := make([]byte, r.Size())
	if _, err := io.ReadFull(io.NewSectionReader(r, 0, int64(len(b))), b); err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return b
}

// flatExtentVMDK is the crafted image of CVE-2024-32498: a sparse VMDK header ("KDMV") with
// capacity 0, whose embedded descriptor names one FLAT extent, a file of the converting host.
// qemu-img then copies that file into the target.
func flatExtentVMDK(path string, sectors int) []byte {
	desc := fmt.Sprintf("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n"+
		"# Extent description\nRW %d FLAT \"%s\" 0\n\n# The Disk Data Base\n#DDB\nddb.virtualHWVersion = \"4\"\n", sectors, path)
	const descOffset, descSectors = 1, 20
	img := make([]byte, (descOffset+descSectors)*512)
	h := img[:512]
	copy(h, "KDMV")
	binary.LittleEndian.PutUint32(h[4:], 1)           // version
	binary.LittleEndian.PutUint32(h[8:], 3)           // flags: valid newline test, redundant grain table
	binary.LittleEndian.PutUint64(h[12:], 0)          // capacity 0: the descriptor says it all
	binary.LittleEndian.PutUint64(h[20:], 128)        // grain size, sectors
	binary.LittleEndian.PutUint64(h[28:], descOffset) // descriptor offset, sectors
	binary.LittleEndian.PutUint64(h[36:], descSectors)
	binary.LittleEndian.PutUint32(h[44:], 512) // grain table entries per table
	binary.LittleEndian.PutUint64(h[64:], descOffset+descSectors)
	copy(h[73:], "\n \r\n") // the newline test characters
	copy(img[descOffset*512:], desc)
	return img
}

// plantMarker writes size bytes of a random marker, repeated, into a file of this host that no
// image has any business reading, and returns its path and the marker.
func plantMarker(t *testing.T, size int) (string, []byte) {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	marker := []byte("imagevol-planted-" + hex.EncodeToString(b))
	// Readable by anyone, the sandbox's unprivileged user included: only the sandbox's mount
	// namespace keeps it out of reach.
	dir, err := os.MkdirTemp("", "e2e-sandbox-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "host-secret")
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, bytes.Repeat(marker, size/len(marker)+1)[:size], 0o644); err != nil {
		t.Fatal(err)
	}
	return path, marker
}

// A crafted VMDK written straight into a staging image (no inspector in the way) makes qemu-img
// on the host copy a host file into the target; the same conversion in the sandbox fails and no
// byte of the file reaches Ceph. A valid qcow2 still converts to the right bytes in the sandbox.
func TestSandboxedConverterReadsNoHostFile(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	planted, marker := plantMarker(t, int(mib))
	vmdk := flatExtentVMDK(planted, int(mib/512))
	id := uuid.NewString()

	sandboxed, err := activities.NewConverter(converterConfig("e2e-sandbox", true))
	if err != nil {
		t.Fatalf("the converter needs its sandbox (bwrap): %v", err)
	}
	if !sandboxed.Sandboxed() {
		t.Fatal("converter not sandboxed by default")
	}
	if err := sandboxed.Check(ctx); err != nil {
		t.Fatal(err)
	}
	host, err := activities.NewConverter(converterConfig("e2e-sandbox-off", false))
	if err != nil {
		t.Fatal(err)
	}

	// Control: the image is as dangerous as it looks. On the host, qemu-img copies the file.
	ctlSrc, ctlDst := "e2e-sandbox-ctl-"+id+"-staging", "e2e-sandbox-ctl-"+id
	putStaging(t, ctlSrc, vmdk)
	t.Cleanup(func() { removeImage(ctlDst) })
	if err := host.Convert(ctx, "vmdk", stack.pool, ctlSrc, ctlDst); err != nil {
		t.Fatalf("control: unsandboxed conversion of the crafted VMDK: %v", err)
	}
	if got := readImage(t, ctlDst); !bytes.Contains(got, marker) {
		t.Fatal("control: the unsandboxed conversion did not copy the planted file; the crafted image tests nothing")
	}
	removeImage(ctlDst)

	// In the sandbox: the extent's file does not exist, the conversion fails as a bad image.
	src, dst := "e2e-sandbox-"+id+"-staging", "e2e-sandbox-"+id
	putStaging(t, src, vmdk)
	t.Cleanup(func() { removeImage(dst) })
	err = sandboxed.Convert(ctx, "vmdk", stack.pool, src, dst)
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || appErr.Type() != contract.ErrTypeCorruptImage {
		t.Fatalf("sandboxed conversion of the crafted VMDK: %v; want a %s failure", err, contract.ErrTypeCorruptImage)
	}
	if !strings.Contains(err.Error(), "No such file or directory") || bytes.Contains([]byte(err.Error()), marker) {
		t.Errorf("error %q: want qemu-img's 'No such file or directory', without the marker", err)
	}
	// No image this test made holds a byte of the marker (the target, if qemu-img created it
	// before failing, included).
	names, err := stack.ceph.List(ctx, stack.pool)
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, n := range names {
		if strings.Contains(n, id) {
			checked++
			if bytes.Contains(readImage(t, n), marker[:16]) {
				t.Errorf("image %s holds the planted marker", n)
			}
		}
	}
	if checked == 0 {
		t.Fatal("found none of the test's images to check")
	}

	// A valid qcow2 still converts, bit for bit, in the sandbox.
	dir := t.TempDir()
	raw := imageBytes(48*mib, 161, 2)
	if err := os.WriteFile(filepath.Join(dir, "disk.raw"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	qemuImg(t, "convert", "-f", "raw", "-O", "qcow2", filepath.Join(dir, "disk.raw"), filepath.Join(dir, "disk.qcow2"))
	qcow, err := os.ReadFile(filepath.Join(dir, "disk.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	qsrc, qdst := "e2e-sandbox-q-"+id+"-staging", "e2e-sandbox-q-"+id
	putStaging(t, qsrc, qcow)
	t.Cleanup(func() { removeImage(qdst) })
	if err := sandboxed.Convert(ctx, "qcow2", stack.pool, qsrc, qdst); err != nil {
		t.Fatalf("sandboxed conversion of a valid qcow2: %v", err)
	}
	got := readImage(t, qdst)
	want := sha512.Sum512(raw)
	if len(got) != len(raw) || sha512.Sum512(got) != want {
		t.Fatalf("converted qcow2: %d bytes, sha512 %x; want %d bytes, %x", len(got), sha512.Sum512(got), len(raw), want)
	}
}

// The worker's import path (ImportImage through a real workflow) converts in the sandbox by
// default: a qcow2 uploaded to Glance becomes a volume with the disk's bytes.
func TestImportConvertsInSandbox(t *testing.T) {
	host := "e2e-sandbox-import"
	cfg := converterConfig(host, true)
	cfg.MaxConcurrentConversions = 1
	acts := startHost(t, cfg)
	if acts.Converter != nil {
		t.Fatal("the host should make its converter from its Config")
	}
	api := newGateway(t, host)
	dir := t.TempDir()
	raw := imageBytes(32*mib, 171, 3)
	if err := os.WriteFile(filepath.Join(dir, "disk.raw"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	qemuImg(t, "convert", "-f", "raw", "-O", "qcow2", filepath.Join(dir, "disk.raw"), filepath.Join(dir, "disk.qcow2"))
	qcow, err := os.ReadFile(filepath.Join(dir, "disk.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	img := uploadImage(t, "sandbox-qcow2", "qcow2", qcow)
	v := api.createVolume(img.ID, 1)
	requireAvailable(t, v, models.CacheMiss)
	sum := sha512.Sum512(raw)
	if got := volumeSHA512(t, v.ID, int64(len(raw))); got != hex.EncodeToString(sum[:]) {
		t.Fatalf("volume bytes sha512 %s, want %x", got, sum)
	}
}
