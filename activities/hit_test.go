package activities

import (
	"context"
	"testing"
	"time"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/storage"
)

// ProvisionFromCache makes a hit in one step (clone, grow, row available, hit counted, lease
// released), recognises an earlier attempt's clone, and on a miss only returns the plan.
func TestProvisionFromCache(t *testing.T) {
	const volID, size = "user", int64(1 << 30)
	name := contract.RBDName(volID)
	for _, tc := range []struct {
		name    string
		seed    bool   // a ready entry of the image on this host
		policy  string // flatten policy
		setup   func(f *fixture, e models.CacheEntry)
		errType string
		done    bool
		parent  func(f *fixture, e models.CacheEntry) storage.Parent // the volume's, when done
		flatten string                                               // the row's flatten state, when done
		hits    int64                                                // counted in the stats
		misses  int64
	}{
		{name: "hit", seed: true, done: true, hits: 1},
		{name: "hit flattened later", seed: true, policy: contract.FlattenAlways, done: true, flatten: models.FlattenPending, hits: 1},
		{name: "miss", misses: 1},
		{name: "earlier attempt cloned", seed: true, setup: func(f *fixture, e models.CacheEntry) {
			f.storage.Clone(context.Background(), contract.CacheParent(tPool, e.VolumeID), tPool, name)
		}, done: true, hits: 1},
		{name: "earlier attempt cloned from another host's entry", seed: true, setup: func(f *fixture, _ models.CacheEntry) {
			other := f.seed("img", "node2", "volumes2", time.Now().Add(-time.Hour), false)
			f.storage.Clone(context.Background(), contract.CacheParent(other.Pool, other.VolumeID), tPool, name)
		}, done: true, hits: 1, parent: func(f *fixture, _ models.CacheEntry) storage.Parent {
			return contract.CacheParent("volumes2", "cache-img-node2")
		}},
		{name: "another image of that name", seed: true, setup: func(f *fixture, _ models.CacheEntry) {
			f.storage.Create(context.Background(), tPool, name, 10)
		}, errType: contract.ErrTypeConflictingImage, hits: 1},
		{name: "cache volume deleted behind the engine's back", seed: true, setup: func(f *fixture, e models.CacheEntry) {
			f.storage.Remove(context.Background(), tPool, contract.RBDName(e.VolumeID))
		}, hits: 1, misses: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(c *Config) { c.FlattenPolicy = tc.policy })
			ctx := context.Background()
			var e models.CacheEntry
			if tc.seed {
				e = f.seed("img", tHost, tPool, time.Now().Add(-time.Minute), false)
			} else {
				f.images.Add("img", data("img", 64<<10))
			}
			if err := f.store.CreateVolume(ctx, &models.Volume{ID: volID, ProjectID: "p", SizeGB: 1, ImageID: "img", Status: models.StatusCreating}); err != nil {
				t.Fatal(err)
			}
			if tc.setup != nil {
				tc.setup(f, e)
			}
			in := contract.HitInput{Lookup: contract.LookupInput{VolumeID: volID, ImageID: "img", SizeGB: 1}, Name: name, SizeBytes: size, MaxLookups: 3}
			res, err := run[contract.HitResult](f, nil, f.a.ProvisionFromCache, in)
			if errType(err) != tc.errType || (tc.errType == "" && err != nil) {
				t.Fatalf("err = %v, want %q", err, tc.errType)
			}
			if res.Done != tc.done {
				t.Fatalf("result %+v, want done %v", res, tc.done)
			}
			v, _ := f.store.GetVolume(ctx, volID)
			if tc.done {
				want := contract.CacheParent(tPool, e.VolumeID)
				if tc.parent != nil {
					want = tc.parent(f, e)
				}
				info, serr := f.storage.Stat(ctx, tPool, name)
				if serr != nil || info.Parent == nil || *info.Parent != want || int64(info.Size) != size {
					t.Fatalf("volume %+v, %v; want a %d-byte clone of %+v", info, serr, size, want)
				}
				if res.Depth != 1 || !res.Plan.Hit || res.Plan.Entry.Parent() != want {
					t.Fatalf("result %+v", res)
				}
				if v.Status != models.StatusAvailable || v.Cache != models.CacheHit || v.Host != tHost || v.Pool != tPool || v.Flatten != tc.flatten {
					t.Fatalf("row %+v", v)
				}
			} else if v.Status != models.StatusCreating {
				t.Fatalf("row %+v of a volume not made", v)
			}
			if tc.errType == "" && !tc.done && (res.Plan.Hit || !res.Plan.Cacheable) {
				t.Fatalf("plan of a miss %+v", res.Plan)
			}
			stats, _ := f.store.Stats(ctx)
			var hits, misses int64
			for _, s := range stats {
				hits, misses = hits+s.Hits, misses+s.Misses
			}
			if hits != tc.hits || misses != tc.misses {
				t.Fatalf("stats: %d hits, %d misses; want %d, %d", hits, misses, tc.hits, tc.misses)
			}
			if got, gerr := f.store.GetCacheEntry(ctx, e.ID); tc.seed && gerr == nil {
				if got.Hits != 1 {
					t.Fatalf("entry hits %d", got.Hits)
				}
				// No lease is left behind: the entry can be evicted at once.
				if err := f.store.BeginEvict(ctx, e.ID, time.Now().UTC(), false); err != nil {
					t.Fatalf("evict after the step: %v", err)
				}
			}
		})
	}
}
