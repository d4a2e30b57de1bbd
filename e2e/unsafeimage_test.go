//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/imagevol/imagevol/activities"
	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/importer"
	"github.com/imagevol/imagevol/importer/testimages"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/storage"
	"github.com/imagevol/imagevol/worker"
)

// recordingStorage is the real Ceph storage, noting the name of every image the worker makes
// (staging images, the conversion targets next to them, cache and user volumes), so that a
// test can check exactly its own images and nothing of the shared pool.
type recordingStorage struct {
	storage.Storage
	mu    sync.Mutex
	names map[[2]string]bool // pool, name
}

func (r *recordingStorage) note(pool, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.names[[2]string{pool, name}] = true
	// qemu-img writes the conversion target itself: the staging image's name without ".part".
	if base, ok := strings.CutSuffix(name, ".part"); ok {
		r.names[[2]string{pool, base}] = true
	}
}

func (r *recordingStorage) recorded() [][2]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([][2]string, 0, len(r.names))
	for n := range r.names {
		out = append(out, n)
	}
	return out
}

func (r *recordingStorage) Create(ctx context.Context, pool, name string, size uint64) error {
	r.note(pool, name)
	return r.Storage.Create(ctx, pool, name, size)
}

func (r *recordingStorage) Clone(ctx context.Context, parent storage.Parent, pool, name string) error {
	r.note(pool, name)
	return r.Storage.Clone(ctx, parent, pool, name)
}

func (r *recordingStorage) Rename(ctx context.Context, pool, from, to string) error {
	r.note(pool, to)
	return r.Storage.Rename(ctx, pool, from, to)
}

// startRecordedHost runs a storage host like startHost, through a recordingStorage.
func startRecordedHost(t *testing.T, cfg activities.Config) *recordingStorage {
	t.Helper()
	rec := &recordingStorage{Storage: stack.ceph, names: map[[2]string]bool{}}
	acts := &activities.Activities{
		Store: stack.store, Storage: rec, Images: stack.glance, Temporal: stack.temporal, Config: cfg,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	runWorkers(t, acts, worker.Options{})
	return rec
}

// requireNoneHoldsMarker checks that no image the host made remains, and names any that holds
// the marker (a byte of the planted host file) if one does.
func requireNoneHoldsMarker(t *testing.T, rec *recordingStorage, marker []byte) {
	t.Helper()
	ctx := context.Background()
	for _, n := range rec.recorded() {
		_, err := stack.ceph.Stat(ctx, n[0], n[1])
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("stat %s/%s: %v", n[0], n[1], err)
		}
		r, err := stack.ceph.OpenReader(ctx, n[0], n[1], "")
		if err != nil {
			t.Fatalf("image %s/%s left behind (and unreadable: %v)", n[0], n[1], err)
		}
		buf := make([]byte, min(int64(r.Size()), 16*mib))
		_, rerr := r.ReadAt(buf, 0)
		r.Close()
		t.Fatalf("image %s/%s left behind; holds the planted file's marker: %v (read: %v)", n[0], n[1], bytes.Contains(buf, marker), rerr)
	}
}

// Each crafted image that would make qemu-img read a file of the worker's host (or another
// image of the pool) fails with UnsafeImage, whatever format it was uploaded as; the one whose
// disk is larger than the volume fails with VolumeTooSmall. Nothing is cached and no image the
// host made remains; valid qcow2 and vmdk images still become volumes holding their disk.
func TestUnsafeImagesAreRefused(t *testing.T) {
	host := "e2e-unsafe"
	rec := startRecordedHost(t, hostConfig(host))
	api := newGateway(t, host)

	// The planted secrets: a file of the host, and an RBD image next to the ones the import
	// makes (what a relative extent name would name next to an rbd:pool/name image; QEMU 7.2
	// refuses to resolve one there, other versions may not).
	random := make([]byte, 16)
	if _, err := rand.Read(random); err != nil {
		t.Fatal(err)
	}
	marker := []byte("imagevol-planted-" + hex.EncodeToString(random))
	secret := bytes.Repeat(marker, int(mib)/len(marker)+1)[:mib]
	planted := filepath.Join(t.TempDir(), "host-secret")
	if err := os.WriteFile(planted, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	relPlanted, err := filepath.Rel(cwd, planted)
	if err != nil {
		t.Fatal(err)
	}
	neighbour := "e2e-unsafe-secret-" + hex.EncodeToString(random[:6])
	plantImage(t, neighbour, secret)

	desc := testimages.Descriptor
	vmdkOf := func(createType, extent string) []byte {
		return testimages.VMDK{Descriptor: desc(createType, []string{extent})}.Bytes()
	}
	flatAbs := vmdkOf("monolithicFlat", testimages.FlatExtent(2048, planted))
	// The crafted VMDK really is the exploit: qemu-img, given it, copies the planted file.
	requireQemuImgReads(t, flatAbs, marker)
	vmfsAbs := vmdkOf("vmfs", testimages.VMFSExtent(2048, planted))
	requireQemuImgReads(t, vmfsAbs, marker)

	vhdx := filepath.Join(t.TempDir(), "base.vhdx")
	qemuImg(t, "create", "-f", "vhdx", vhdx, "64M")
	vhdxBytes, err := os.ReadFile(vhdx)
	if err != nil {
		t.Fatal(err)
	}
	vhdxDiff, err := testimages.MakeDifferencing(vhdxBytes, planted)
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name, declared string
		data           []byte
		errType        string
	}{
		{"vmdk-flat-absolute", "vmdk", flatAbs, contract.ErrTypeUnsafeImage},
		{"vmdk-flat-absolute-as-raw", "raw", flatAbs, contract.ErrTypeUnsafeImage},
		{"vmdk-flat-relative", "vmdk", vmdkOf("monolithicFlat", testimages.FlatExtent(2048, relPlanted)), contract.ErrTypeUnsafeImage},
		{"vmdk-flat-relative-as-raw", "raw", vmdkOf("monolithicFlat", testimages.FlatExtent(2048, relPlanted)), contract.ErrTypeUnsafeImage},
		{"vmdk-flat-pool-neighbour", "vmdk", vmdkOf("monolithicFlat", testimages.FlatExtent(2048, neighbour)), contract.ErrTypeUnsafeImage},
		{"vmdk-vmfs-absolute", "vmdk", vmfsAbs, contract.ErrTypeUnsafeImage},
		{"vmdk-vmfs-absolute-as-raw", "raw", vmfsAbs, contract.ErrTypeUnsafeImage},
		{"vmdk-vmfs-relative", "vmdk", vmdkOf("vmfs", testimages.VMFSExtent(2048, relPlanted)), contract.ErrTypeUnsafeImage},
		{"vmdk-vmfs-relative-as-raw", "raw", vmdkOf("vmfs", testimages.VMFSExtent(2048, relPlanted)), contract.ErrTypeUnsafeImage},
		{"vmdk-parent-hint", "vmdk", testimages.VMDK{Capacity: 2048, Descriptor: desc("monolithicSparse",
			[]string{testimages.SparseExtent(2048, "disk.vmdk")}, `parentFileNameHint="`+planted+`"`)}.Bytes(), contract.ErrTypeUnsafeImage},
		{"qcow2-data-file", "qcow2", testimages.QCOW2{VirtualSize: uint64(mib), Incompat: 1 << 2, DataFile: planted}.Bytes(), contract.ErrTypeUnsafeImage},
		{"qcow2-data-file-as-raw", "raw", testimages.QCOW2{VirtualSize: uint64(mib), Incompat: 1 << 2, DataFile: planted}.Bytes(), contract.ErrTypeUnsafeImage},
		{"vhdx-differencing", "vhdx", vhdxDiff, contract.ErrTypeUnsafeImage},
		{"qed-as-raw", "raw", testimages.Signature("qed"), contract.ErrTypeUnsafeImage},
		{"qcow2-larger-than-volume-as-raw", "raw", testimages.QCOW2{VirtualSize: 2 * uint64(gib)}.Bytes(), contract.ErrTypeVolumeTooSmall},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			img := uploadImage(t, "unsafe-"+tc.name, tc.declared, tc.data)
			v := api.createVolume(img.ID, 1)
			requireFailed(t, host, v, tc.errType)
			if es := entriesOfImage(t, img.ID); len(es) != 0 {
				t.Fatalf("cache entries left for the refused image: %+v", es)
			}
			requireNoneHoldsMarker(t, rec, marker)
		})
	}

	// Valid images of the converted formats still import, with the disk they describe.
	raw := imageBytes(12*mib, 71, 2)
	src := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(src, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha512.Sum512(raw)
	for _, f := range []struct{ name, format string }{{"qcow2", "qcow2"}, {"vmdk", "vmdk"}} {
		t.Run("valid-"+f.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "disk."+f.name)
			qemuImg(t, "convert", "-f", "raw", "-O", f.format, src, out)
			data, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			img := uploadImage(t, "valid-"+f.name, f.format, data)
			v := api.createVolume(img.ID, 1)
			requireAvailable(t, v, models.CacheMiss)
			if got := volumeSHA512(t, v.ID, int64(len(raw))); got != hex.EncodeToString(sum[:]) {
				t.Fatalf("the volume does not hold the disk the %s image describes", f.name)
			}
		})
	}
}

// A host whose allowed formats leave qcow2 out refuses a valid qcow2 image with UnsafeImage,
// naming the format and the setting, and still imports raw data.
func TestDisallowedFormatIsRefused(t *testing.T) {
	host := "e2e-formats"
	cfg := hostConfig(host)
	cfg.AllowedFormats = []importer.Format{importer.FormatRaw, importer.FormatISO}
	startHost(t, cfg)
	api := newGateway(t, host)

	raw := imageBytes(4*mib, 81, 1)
	src := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(src, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "disk.qcow2")
	qemuImg(t, "convert", "-f", "raw", "-O", "qcow2", src, out)
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	v := api.createVolume(uploadImage(t, "not-allowed-qcow2", "qcow2", data).ID, 1)
	requireFailed(t, host, v, contract.ErrTypeUnsafeImage)
	if !strings.Contains(v.Error, "qcow2") || !strings.Contains(v.Error, "allowed_formats") {
		t.Fatalf("error %q names neither the format nor the setting", v.Error)
	}

	ok := api.createVolume(uploadImage(t, "allowed-raw", "raw", raw).ID, 1)
	requireAvailable(t, ok, models.CacheMiss)
	sum := sha512.Sum512(raw)
	if got := volumeSHA512(t, ok.ID, int64(len(raw))); got != hex.EncodeToString(sum[:]) {
		t.Fatal("the raw volume does not hold the image's bytes")
	}
}

// plantImage writes data into a new RBD image of the test pool, removed when the test ends.
func plantImage(t *testing.T, name string, data []byte) {
	t.Helper()
	ctx := context.Background()
	if err := stack.ceph.Create(ctx, stack.pool, name, uint64(len(data))); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = stack.ceph.Remove(context.Background(), stack.pool, name) })
	w, err := stack.ceph.OpenWriter(ctx, stack.pool, name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(data, 0); err != nil {
		w.Close()
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// requireQemuImgReads checks that qemu-img, converting the vmdk image straight from a local
// file, copies the marker into its output: the crafted image is a working exploit.
func requireQemuImgReads(t *testing.T, vmdk, marker []byte) {
	t.Helper()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "crafted.vmdk"), filepath.Join(dir, "out.raw")
	if err := os.WriteFile(in, vmdk, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("qemu-img", "convert", "-f", "vmdk", "-O", "raw", in, out).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert of the crafted vmdk: %v: %s", err, b)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(got, marker) {
		t.Fatal("qemu-img did not copy the planted file: the crafted image is not the exploit it claims to be")
	}
}
