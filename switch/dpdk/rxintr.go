//go:build cgo

package dpdk

/*
#include <rte_atomic.h>
#include <rte_ethdev.h>

// vd_rx_intr_enable asks the driver to signal queue's interrupt fd when
// frames arrive, then fences: the caller polls the queue next, to catch a
// frame that came before the enable and raised nothing, and that poll's
// loads of the ring must not pass the driver's store that turned the
// signal on (for net_vhost: clearing VRING_USED_F_NO_NOTIFY, or setting
// avail_event). Its spinlock's release is a plain store on x86, which a
// later load may overtake.
static int vd_rx_intr_enable(uint16_t port, uint16_t queue)
{
	int rc = rte_eth_dev_rx_intr_enable(port, queue);
	rte_atomic_thread_fence(__ATOMIC_SEQ_CST);
	return rc;
}
*/
import "C"

import (
	"errors"
	"syscall"
)

// ErrNoRxInterrupt is returned by RxInterruptFD when the device has no
// receive interrupt fd: its driver has no rx interrupts (net_ring,
// net_null, net_af_packet, net_memif in DPDK 22.11), or the port was
// configured without PortConfig.RxInterrupts.
var ErrNoRxInterrupt = errors.New("dpdk: the device has no rx interrupt fd")

// RxInterruptFD returns the fd that becomes readable when receive queue 0
// has frames (rte_eth_dev_rx_intr_ctl_q_get_fd). Call it after Start on a
// port configured with RxInterrupts. The fd belongs to the driver, lives
// until the port is closed, and must never be read by the caller: what it
// is depends on the driver (DPDK 22.11):
//
//   - net_tap: the tap queue's own fd; a read would take a frame. Readable
//     while frames are queued; nothing needs enabling (EnableInterrupt
//     says ENOTSUP).
//   - net_vhost: an epoll fd the driver keeps per queue, holding the
//     frontend's kick eventfd, which nobody drains: once kicked it stays
//     readable, so watch it edge-triggered. The frontend kicks only after
//     EnableInterrupt.
//   - NICs (vfio-pci MSI-X) and net_virtio_user: an eventfd.
//
// DPDK's own rx interrupt code (rte_eth_dev_rx_intr_ctl) watches every
// such fd with EPOLLET and reads only those it knows to be counters.
func (p *Port) RxInterruptFD() (int, error) {
	fd := -1
	err := p.e.do(func() error {
		fd = int(C.rte_eth_dev_rx_intr_ctl_q_get_fd(p.id, 0))
		return nil
	})
	if err != nil {
		return -1, err
	}
	if fd < 0 {
		return -1, ErrNoRxInterrupt
	}
	return fd, nil
}

// EnableInterrupt asks the driver to signal the queue's interrupt fd when
// frames arrive (rte_eth_dev_rx_intr_enable), with a full fence after it.
// A frame that arrived before the call may have raised no signal: poll the
// queue once more before waiting on the fd. syscall.ENOTSUP means the
// driver has nothing to enable (net_tap: its fd is the queue itself). It
// runs on the caller's thread (the poller that owns the queue), one cgo
// call, no allocation.
func (r *RxQueue) EnableInterrupt() error {
	if rc := C.vd_rx_intr_enable(r.q.port, r.q.queue); rc != 0 {
		return syscall.Errno(-rc)
	}
	return nil
}

// DisableInterrupt asks the driver to stop signalling the queue's
// interrupt fd (rte_eth_dev_rx_intr_disable): while the queue is polled
// anyway, signals only cost the sender (a net_vhost frontend's kick is a
// system call per burst). Like EnableInterrupt it runs on the caller's
// thread and does not allocate.
func (r *RxQueue) DisableInterrupt() error {
	if rc := C.rte_eth_dev_rx_intr_disable(r.q.port, r.q.queue); rc != 0 {
		return syscall.Errno(-rc)
	}
	return nil
}
