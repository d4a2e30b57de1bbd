// Package memsource implements imagesource.Source (and Members) in memory, for tests that run
// without Glance. Images are added with their bytes and published as Glance publishes them: an
// active image with its size and a sha512 multihash (os_hash_algo, os_hash_value) and md5
// checksum of its data. Helpers delete, deactivate, re-upload or edit an image, or make it lie
// about its data, for the cache's invalidation and verification tests; FailNext and Hook inject
// faults. A Source is safe for concurrent use.
//
// Of imagevol's packages it imports only imagesource.
package memsource

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"sync"
	"time"

	"github.com/imagevol/imagevol/imagesource"
)

// Method names, as FailNext, Hook and Calls take them.
const (
	MethodGet          = "Get"
	MethodOpen         = "Open"
	MethodMemberStatus = "MemberStatus"
)

// StatusQueued is Glance's status of an image created without data yet.
const StatusQueued = "queued"

// ErrForbidden is what Open returns for a deactivated image, whose data Glance refuses (403) to
// everyone but admins.
var ErrForbidden = errors.New("memsource: image data forbidden (deactivated)")

type entry struct {
	img     imagesource.Image
	data    []byte
	members map[string]string
}

// Source is an in-memory imagesource.Source.
type Source struct {
	mu     sync.Mutex
	images map[string]*entry
	calls  map[string]int
	opens  map[string][]int64 // offsets of Open, by image
	fail   map[string][]error
	hook   func(method, id string) error
	now    func() time.Time
}

var (
	_ imagesource.Source  = (*Source)(nil)
	_ imagesource.Members = (*Source)(nil)
)

// New returns a Source with no images.
func New() *Source {
	return &Source{
		images: map[string]*entry{}, calls: map[string]int{}, opens: map[string][]int64{}, fail: map[string][]error{},
		now: func() time.Time { return time.Now().UTC() },
	}
}

// Describe returns the metadata Glance publishes for an active, public image holding data: its
// size, sha512 multihash and md5 checksum. Raw data's virtual size is its size.
func Describe(id string, data []byte) imagesource.Image {
	sum := sha512.Sum512(data)
	md := md5.Sum(data)
	return imagesource.Image{
		ID: id, Name: "image-" + id, Status: imagesource.StatusActive, DiskFormat: "raw",
		Size: int64(len(data)), VirtualSize: int64(len(data)),
		HashAlgo: "sha512", HashValue: hex.EncodeToString(sum[:]), Checksum: hex.EncodeToString(md[:]),
		Visibility: imagesource.VisibilityPublic, ContainerFormat: "bare",
	}
}

// Add uploads an image: active, public, raw, with data's size and hashes (see Describe). It
// replaces an image of the same id, and returns the metadata as Get will.
func (s *Source) Add(id string, data []byte) imagesource.Image {
	return s.Put(Describe(id, data), data)
}

// Put stores an image with exactly the metadata given, whatever the data: a test makes an image
// lie about its hash or size this way. UpdatedAt is set when it is zero. It returns the
// metadata as Get will.
func (s *Source) Put(img imagesource.Image, data []byte) imagesource.Image {
	s.mu.Lock()
	defer s.mu.Unlock()
	if img.UpdatedAt.IsZero() {
		img.UpdatedAt = s.now()
	}
	members := map[string]string{}
	if old := s.images[img.ID]; old != nil {
		members = old.members
	}
	img.Properties = maps.Clone(img.Properties)
	s.images[img.ID] = &entry{img: img, data: bytes.Clone(data), members: members}
	img.Properties = maps.Clone(img.Properties)
	return img
}

// Delete removes an image: Get and Open then report imagesource.ErrNotFound.
func (s *Source) Delete(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.images, id)
}

// Update edits an image's metadata in place (its data stays), and stamps UpdatedAt.
func (s *Source) Update(id string, edit func(*imagesource.Image)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.images[id]
	if e == nil {
		return fmt.Errorf("memsource: update %s: %w", id, imagesource.ErrNotFound)
	}
	edit(&e.img)
	e.img.ID = id
	e.img.UpdatedAt = s.now()
	return nil
}

// Deactivate sets an image's status to deactivated, as Glance's admin action does.
func (s *Source) Deactivate(id string) error {
	return s.Update(id, func(img *imagesource.Image) { img.Status = imagesource.StatusDeactivated })
}

// Reactivate sets an image's status back to active.
func (s *Source) Reactivate(id string) error {
	return s.Update(id, func(img *imagesource.Image) { img.Status = imagesource.StatusActive })
}

// Reupload replaces an image's data under the same id: new size and hashes, so a new content
// hash. Other metadata stays.
func (s *Source) Reupload(id string, data []byte) (imagesource.Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.images[id]
	if e == nil {
		return imagesource.Image{}, fmt.Errorf("memsource: reupload %s: %w", id, imagesource.ErrNotFound)
	}
	d := Describe(id, data)
	e.img.Size, e.img.VirtualSize, e.img.HashAlgo, e.img.HashValue, e.img.Checksum = d.Size, d.VirtualSize, d.HashAlgo, d.HashValue, d.Checksum
	e.img.UpdatedAt = s.now()
	e.data = bytes.Clone(data)
	return e.img, nil
}

// SetMember sets a project's membership status of an image (imagesource.MemberAccepted,
// MemberPending or MemberRejected); an empty status removes the membership.
func (s *Source) SetMember(imageID, project, status string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.images[imageID]
	if e == nil {
		return fmt.Errorf("memsource: member of %s: %w", imageID, imagesource.ErrNotFound)
	}
	if status == "" {
		delete(e.members, project)
	} else {
		e.members[project] = status
	}
	return nil
}

// FailNext makes the next call of method fail with err; calls queue up, one error per call.
// Wrap imagesource.ErrUnavailable for an image service that is down.
func (s *Source) FailNext(method string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail[method] = append(s.fail[method], err)
}

// Hook sets a function called before every call, with the method and the image id (nil
// removes it); an error it returns fails the call. It runs without the Source's lock held.
func (s *Source) Hook(h func(method, id string) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hook = h
}

// Calls counts the calls of method so far, failed ones included.
func (s *Source) Calls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

// Offsets lists the offsets an image's data was opened at, in order, failed calls included
// (but not those a fault failed): a resumed download asks for its rest only.
func (s *Source) Offsets(id string) []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.opens[id]...)
}

func (s *Source) enter(ctx context.Context, method, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	s.calls[method]++
	hook := s.hook
	var err error
	if q := s.fail[method]; len(q) > 0 {
		err, s.fail[method] = q[0], q[1:]
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if hook != nil {
		return hook(method, id)
	}
	return nil
}

// Get returns an image's metadata.
func (s *Source) Get(ctx context.Context, id string) (imagesource.Image, error) {
	if err := s.enter(ctx, MethodGet, id); err != nil {
		return imagesource.Image{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.images[id]
	if e == nil {
		return imagesource.Image{}, fmt.Errorf("memsource: image %s: %w", id, imagesource.ErrNotFound)
	}
	img := e.img
	img.Properties = maps.Clone(img.Properties) // the caller's own copy
	return img, nil
}

// Open streams an image's data from offset on. A queued image has no data
// (imagesource.ErrNoData); a deactivated one's is refused (ErrForbidden).
func (s *Source) Open(ctx context.Context, id string, offset int64) (io.ReadCloser, error) {
	if err := s.enter(ctx, MethodOpen, id); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opens[id] = append(s.opens[id], offset)
	e := s.images[id]
	switch {
	case e == nil:
		return nil, fmt.Errorf("memsource: image %s: %w", id, imagesource.ErrNotFound)
	case e.img.Status == StatusQueued:
		return nil, fmt.Errorf("memsource: image %s: %w", id, imagesource.ErrNoData)
	case e.img.Status == imagesource.StatusDeactivated:
		return nil, fmt.Errorf("memsource: image %s: %w", id, ErrForbidden)
	case offset < 0 || offset > int64(len(e.data)):
		return nil, fmt.Errorf("memsource: image %s: range from %d not satisfiable (%d bytes)", id, offset, len(e.data))
	}
	// The data is never written in place (Put and Reupload store copies): no copy needed.
	return io.NopCloser(bytes.NewReader(e.data[offset:])), nil
}

// MemberStatus returns a project's membership status of a shared image.
func (s *Source) MemberStatus(ctx context.Context, imageID, project string) (string, error) {
	if err := s.enter(ctx, MethodMemberStatus, imageID); err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.images[imageID]
	if e == nil {
		return "", fmt.Errorf("memsource: image %s: %w", imageID, imagesource.ErrNotFound)
	}
	st, ok := e.members[project]
	if !ok {
		return "", fmt.Errorf("memsource: image %s: project %q is not a member: %w", imageID, project, imagesource.ErrNotFound)
	}
	return st, nil
}
