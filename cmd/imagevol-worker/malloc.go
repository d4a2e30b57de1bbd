package main

// #include <malloc.h>
import "C"

// librados runs dozens of threads; glibc gives each busy one its own malloc arena, and freed
// buffers stay resident in all of them. Two arenas, and a fixed mmap threshold below the 4 MiB
// blocks librbd copies every write into (glibc would otherwise raise the threshold after the
// first free and serve later blocks from an arena, which keeps them), keep the worker's memory
// flat however large the image it imports. Set in init, before the first Ceph thread starts.
func init() {
	C.mallopt(C.M_ARENA_MAX, 2)
	C.mallopt(C.M_MMAP_THRESHOLD, 1<<20)
}
