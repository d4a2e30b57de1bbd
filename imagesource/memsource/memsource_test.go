package memsource

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"io"
	"reflect"
	"testing"

	"github.com/imagevol/imagevol/imagesource"
)

var ctx = context.Background()

func read(t *testing.T, s *Source, id string, off int64) string {
	t.Helper()
	r, err := s.Open(ctx, id, off)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// An added image is published as Glance publishes it, and its data streams from any offset.
func TestAddGetOpen(t *testing.T) {
	s := New()
	data := []byte("hello image")
	img := s.Add("i1", data)
	sum := sha512.Sum512(data)
	got, err := s.Get(ctx, "i1")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, img) || got.Status != imagesource.StatusActive || got.Size != int64(len(data)) ||
		got.ContentHash() != "sha512:"+hex.EncodeToString(sum[:]) || got.UpdatedAt.IsZero() {
		t.Fatalf("image %+v", got)
	}
	if r := read(t, s, "i1", 6); r != "image" {
		t.Fatalf("from offset 6: %q", r)
	}
	if _, err := s.Open(ctx, "i1", 100); err == nil {
		t.Fatal("an offset past the end was served")
	}
}

// Deletion, deactivation, a re-upload and metadata edits show as Glance shows them.
func TestInvalidationHelpers(t *testing.T) {
	s := New()
	old := s.Add("i", []byte("v1"))
	for _, tc := range []struct {
		name    string
		change  func() error
		status  string
		getErr  error
		openErr error
		sameSum bool
	}{
		{"edit name", func() error { return s.Update("i", func(i *imagesource.Image) { i.Name = "renamed" }) }, imagesource.StatusActive, nil, nil, true},
		{"deactivate", func() error { return s.Deactivate("i") }, imagesource.StatusDeactivated, nil, ErrForbidden, true},
		{"reactivate", func() error { return s.Reactivate("i") }, imagesource.StatusActive, nil, nil, true},
		{"queued", func() error { return s.Update("i", func(i *imagesource.Image) { i.Status = StatusQueued }) }, StatusQueued, nil, imagesource.ErrNoData, true},
		{"reupload", func() error {
			if err := s.Reactivate("i"); err != nil {
				return err
			}
			_, err := s.Reupload("i", []byte("v2"))
			return err
		}, imagesource.StatusActive, nil, nil, false},
		{"delete", func() error { s.Delete("i"); return nil }, "", imagesource.ErrNotFound, imagesource.ErrNotFound, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.change(); err != nil {
				t.Fatal(err)
			}
			img, err := s.Get(ctx, "i")
			if !errors.Is(err, tc.getErr) && !(tc.getErr == nil && err == nil) {
				t.Fatalf("Get: %v, want %v", err, tc.getErr)
			}
			if err == nil && (img.Status != tc.status || (img.ContentHash() == old.ContentHash()) != tc.sameSum) {
				t.Fatalf("after %s: %+v", tc.name, img)
			}
			if _, err := s.Open(ctx, "i", 0); !errors.Is(err, tc.openErr) && !(tc.openErr == nil && err == nil) {
				t.Fatalf("Open: %v, want %v", err, tc.openErr)
			}
		})
	}
}

// A lying image serves other bytes than it publishes a hash and size of.
func TestPutLies(t *testing.T) {
	s := New()
	img := Describe("liar", []byte("what it claims"))
	s.Put(img, []byte("what it serves, which is longer"))
	if got, _ := s.Get(ctx, "liar"); got.ContentHash() != img.ContentHash() || got.Size != 14 {
		t.Fatalf("published %+v", got)
	}
	if r := read(t, s, "liar", 0); r != "what it serves, which is longer" {
		t.Fatalf("served %q", r)
	}
}

func TestMembersAndFaults(t *testing.T) {
	s := New()
	s.Add("shared", []byte("x"))
	if err := s.SetMember("shared", "p1", imagesource.MemberAccepted); err != nil {
		t.Fatal(err)
	}
	if st, err := s.MemberStatus(ctx, "shared", "p1"); st != imagesource.MemberAccepted || err != nil {
		t.Fatalf("member p1: %q, %v", st, err)
	}
	if _, err := s.MemberStatus(ctx, "shared", "p2"); !errors.Is(err, imagesource.ErrNotFound) {
		t.Fatalf("non-member: %v", err)
	}
	s.FailNext(MethodGet, imagesource.ErrUnavailable)
	if _, err := s.Get(ctx, "shared"); !errors.Is(err, imagesource.ErrUnavailable) {
		t.Fatalf("injected fault: %v", err)
	}
	if _, err := s.Get(ctx, "shared"); err != nil {
		t.Fatalf("after the fault: %v", err)
	}
	s.Hook(func(method, id string) error {
		if method == MethodOpen {
			return imagesource.ErrUnavailable
		}
		return nil
	})
	if _, err := s.Open(ctx, "shared", 0); !errors.Is(err, imagesource.ErrUnavailable) {
		t.Fatalf("hooked Open: %v", err)
	}
	if s.Calls(MethodGet) != 2 || s.Calls(MethodOpen) != 1 {
		t.Fatalf("calls: get %d, open %d", s.Calls(MethodGet), s.Calls(MethodOpen))
	}
}

// An image's custom properties come back from Get as put, in a copy of the caller's own.
func TestProperties(t *testing.T) {
	s := New()
	img := Describe("p1", []byte("data"))
	img.Properties = map[string]string{"hw_disk_bus": "scsi"}
	s.Put(img, []byte("data"))
	img.Properties["hw_disk_bus"] = "virtio"
	got, err := s.Get(context.Background(), "p1")
	if err != nil || got.Properties["hw_disk_bus"] != "scsi" || got.ContainerFormat != "bare" {
		t.Fatalf("Get: %+v, %v", got, err)
	}
	got.Properties["os_distro"] = "debian"
	if again, _ := s.Get(context.Background(), "p1"); len(again.Properties) != 1 {
		t.Fatalf("Get's map is shared: %v", again.Properties)
	}
}
