package main

// #include <malloc.h>
import "C"

// librados runs dozens of threads; glibc gives each busy one its own malloc arena, and freed
// buffers stay resident in all of them. Two arenas keep the worker's memory flat however large
// the image it imports. Set in init, before the first Ceph thread starts.
func init() {
	C.mallopt(C.M_ARENA_MAX, 2)
}
