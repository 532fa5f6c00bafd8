package virtqueue

import "unsafe"

// The hot ring accessors load and store virtio's little-endian fields with
// native loads and stores, so vhostd runs on little-endian hosts only
// (x86-64, arm64, riscv64, ...). Refuse to start anywhere else rather
// than corrupt guests' rings.
func init() {
	x := uint16(1)
	if *(*byte)(unsafe.Pointer(&x)) != 1 {
		panic("virtqueue: big-endian hosts are not supported")
	}
}
