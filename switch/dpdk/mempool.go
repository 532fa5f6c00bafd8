//go:build cgo

package dpdk

/*
#include <stdlib.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_errno.h>

static int vd_errno2(void) { return rte_errno; }
*/
import "C"

import (
	"fmt"
	"sync/atomic"
	"unsafe"
)

// Headroom is the space DPDK keeps in front of each mbuf's data
// (RTE_PKTMBUF_HEADROOM).
const Headroom = C.RTE_PKTMBUF_HEADROOM

// MaxDataRoom is the largest mbuf data room (a uint16 in DPDK).
const MaxDataRoom = 65535

// Mempool is a pool of packet mbufs (rte_pktmbuf_pool_create).
type Mempool struct {
	e    *EAL
	mp   *C.struct_rte_mempool
	name string
	n    int
	room int // usable bytes per mbuf: data room less headroom
}

var poolSeq atomic.Uint64

// NewPktmbufPool creates a pool of n mbufs, each with dataRoom bytes for
// headroom plus data, and a per-lcore cache of cache mbufs. n is best one
// less than a power of two.
func (e *EAL) NewPktmbufPool(n, cache, dataRoom int) (*Mempool, error) {
	if dataRoom <= Headroom || dataRoom > MaxDataRoom {
		return nil, fmt.Errorf("dpdk: mbuf data room %d out of range %d..%d", dataRoom, Headroom+1, MaxDataRoom)
	}
	m := &Mempool{e: e, n: n, room: dataRoom - Headroom, name: fmt.Sprintf("vhostd_mb%d", poolSeq.Add(1))}
	err := e.do(func() error {
		mark := complaintMark()
		cname := C.CString(m.name)
		defer C.free(unsafe.Pointer(cname))
		m.mp = C.rte_pktmbuf_pool_create(cname, C.uint(n), C.uint(cache), 0, C.uint16_t(dataRoom), C.SOCKET_ID_ANY)
		if m.mp == nil {
			err := newError(fmt.Sprintf("create mbuf pool of %d x %d bytes", n, dataRoom), int(C.vd_errno2()), mark)
			err.Hint = "give DPDK more memory (--eal '-m MB') or lower the uplink MTU"
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// Room returns the bytes of frame data one mbuf holds.
func (m *Mempool) Room() int { return m.room }

// Size returns the number of mbufs in the pool.
func (m *Mempool) Size() int { return m.n }

// Available returns how many mbufs are free (in the pool and its caches).
func (m *Mempool) Available() int {
	if m.mp == nil {
		return 0
	}
	return int(C.rte_mempool_avail_count(m.mp))
}

// Free releases the pool. Every mbuf must be back in it: close the ports
// using it first.
func (m *Mempool) Free() error {
	if m.mp == nil {
		return nil
	}
	err := m.e.do(func() error {
		C.rte_mempool_free(m.mp)
		return nil
	})
	m.mp = nil
	return err
}
