//go:build cgo

package dpdk

/*
#include <stdlib.h>
#include <string.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

#define VD_REP_MAX 64

// vd_rep holds prebuilt frames (mbuf chains with their offload metadata)
// that are transmitted again and again by reference: each send takes one
// more reference on every segment, and the driver's free after
// transmission drops it, so the frame is never copied and never freed
// while the repeater holds it.
struct vd_rep {
	uint16_t port, queue;
	uint16_t nf, next;
	struct rte_mbuf *frames[VD_REP_MAX];
};

// vd_rep_add copies len bytes of data into a new chain of mbufs from mp
// and sets the head's offload fields (cgo cannot set the l2_len/l3_len/
// l4_len/tso_segsz bitfields). It returns 0, or -ENOMEM / -ENOSPC.
static int vd_rep_add(struct vd_rep *r, struct rte_mempool *mp, const unsigned char *data, uint32_t len,
	uint64_t ol, uint16_t l2, uint16_t l3, uint16_t l4, uint16_t segsz)
{
	if (r->nf >= VD_REP_MAX)
		return -ENOSPC;
	struct rte_mbuf *head = NULL, *prev = NULL;
	uint32_t off = 0;
	uint16_t nseg = 0;
	while (off < len || head == NULL) {
		struct rte_mbuf *m = rte_pktmbuf_alloc(mp);
		if (m == NULL) {
			if (head != NULL)
				rte_pktmbuf_free(head);
			return -ENOMEM;
		}
		uint32_t room = rte_pktmbuf_tailroom(m);
		uint32_t n = len - off < room ? len - off : room;
		memcpy(rte_pktmbuf_mtod(m, void *), data + off, n);
		m->data_len = (uint16_t)n;
		off += n;
		nseg++;
		if (head == NULL)
			head = m;
		else
			prev->next = m;
		prev = m;
	}
	head->nb_segs = nseg;
	head->pkt_len = len;
	head->ol_flags = ol;
	head->l2_len = l2;
	head->l3_len = l3;
	head->l4_len = l4;
	head->tso_segsz = segsz;
	r->frames[r->nf++] = head;
	return 0;
}

static void vd_rep_ref(struct rte_mbuf *m, int16_t v)
{
	for (; m != NULL; m = m->next)
		rte_mbuf_refcnt_update(m, v);
}

// vd_rep_send transmits n references to the frames, round robin, and
// returns how many the device took; the references of the others are
// dropped again.
static uint16_t vd_rep_send(struct vd_rep *r, uint16_t n)
{
	struct rte_mbuf *b[64];
	if (n > 64)
		n = 64;
	if (r->nf == 0)
		return 0;
	uint16_t next = r->next;
	for (uint16_t i = 0; i < n; i++) {
		b[i] = r->frames[next];
		vd_rep_ref(b[i], 1);
		if (++next == r->nf)
			next = 0;
	}
	uint16_t sent = rte_eth_tx_burst(r->port, r->queue, b, n);
	for (uint16_t i = sent; i < n; i++)
		vd_rep_ref(b[i], -1);
	// Resume with the first frame not taken.
	r->next = (uint16_t)((r->next + sent) % r->nf);
	return sent;
}

static void vd_rep_free(struct vd_rep *r)
{
	for (uint16_t i = 0; i < r->nf; i++)
		rte_pktmbuf_free(r->frames[i]);
	r->nf = 0;
}
*/
import "C"

import (
	"fmt"
	"syscall"
	"unsafe"
)

// Offload bits of rte_eth_conf (ethdev offloads a port is configured
// with) beyond RxOffloadScatter and TxOffloadMultiSeg.
const (
	RxOffloadTCPLRO    = uint64(C.RTE_ETH_RX_OFFLOAD_TCP_LRO)
	RxOffloadTCPCksum  = uint64(C.RTE_ETH_RX_OFFLOAD_TCP_CKSUM)
	RxOffloadUDPCksum  = uint64(C.RTE_ETH_RX_OFFLOAD_UDP_CKSUM)
	RxOffloadIPv4Cksum = uint64(C.RTE_ETH_RX_OFFLOAD_IPV4_CKSUM)
	TxOffloadTCPTSO    = uint64(C.RTE_ETH_TX_OFFLOAD_TCP_TSO)
	TxOffloadTCPCksum  = uint64(C.RTE_ETH_TX_OFFLOAD_TCP_CKSUM)
	TxOffloadUDPCksum  = uint64(C.RTE_ETH_TX_OFFLOAD_UDP_CKSUM)
	TxOffloadIPv4Cksum = uint64(C.RTE_ETH_TX_OFFLOAD_IPV4_CKSUM)
)

// Mbuf offload flags (rte_mbuf ol_flags).
const (
	MbufTxTCPSeg   = uint64(C.RTE_MBUF_F_TX_TCP_SEG)
	MbufTxTCPCksum = uint64(C.RTE_MBUF_F_TX_TCP_CKSUM)
	MbufTxUDPCksum = uint64(C.RTE_MBUF_F_TX_UDP_CKSUM)
	MbufTxIPCksum  = uint64(C.RTE_MBUF_F_TX_IP_CKSUM)
	MbufTxIPv4     = uint64(C.RTE_MBUF_F_TX_IPV4)
	MbufTxIPv6     = uint64(C.RTE_MBUF_F_TX_IPV6)

	MbufRxIPCksumMask = uint64(C.RTE_MBUF_F_RX_IP_CKSUM_MASK)
	MbufRxIPCksumBad  = uint64(C.RTE_MBUF_F_RX_IP_CKSUM_BAD)
	MbufRxIPCksumGood = uint64(C.RTE_MBUF_F_RX_IP_CKSUM_GOOD)

	MbufRxLRO          = uint64(C.RTE_MBUF_F_RX_LRO)
	MbufRxL4CksumMask  = uint64(C.RTE_MBUF_F_RX_L4_CKSUM_MASK)
	MbufRxL4CksumGood  = uint64(C.RTE_MBUF_F_RX_L4_CKSUM_GOOD)
	MbufRxL4CksumBad   = uint64(C.RTE_MBUF_F_RX_L4_CKSUM_BAD)
	MbufRxL4CksumNone  = uint64(C.RTE_MBUF_F_RX_L4_CKSUM_NONE)
	MbufRxL4CksumUnkno = uint64(C.RTE_MBUF_F_RX_L4_CKSUM_UNKNOWN)
)

// MaxRepeatFrames is the most frames one Repeater holds.
const MaxRepeatFrames = C.VD_REP_MAX

// TxMeta is the offload metadata of a frame to transmit: the mbuf
// ol_flags and header lengths a driver reads (for virtio: the virtio-net
// header's flags, csum_start/offset, gso_type/size, hdr_len).
type TxMeta struct {
	Flags      uint64 // MbufTx* flags
	L2, L3, L4 int    // header lengths in bytes
	SegSize    int    // MSS of a TSO frame (tso_segsz)
}

// Repeater transmits prebuilt frames on queue 0 of a port again and
// again without copying them: each send takes a reference on the frame's
// mbufs, which the driver drops once it is done with them. It is a
// traffic generator's tool, not part of vhostd's data path. Only one
// goroutine may use it.
type Repeater struct {
	r *C.struct_vd_rep
}

// NewRepeater returns a repeater on p with a copy of each of frames (at
// most MaxRepeatFrames) in mbufs of pool (chained where a frame exceeds
// one mbuf), each with meta.
func (p *Port) NewRepeater(pool *Mempool, frames [][]byte, meta TxMeta) (*Repeater, error) {
	if len(frames) == 0 || len(frames) > MaxRepeatFrames {
		return nil, fmt.Errorf("dpdk: repeater of %d frames: want 1..%d", len(frames), MaxRepeatFrames)
	}
	r := (*C.struct_vd_rep)(C.calloc(1, C.sizeof_struct_vd_rep))
	r.port, r.queue = p.id, 0
	rp := &Repeater{r: r}
	for i, f := range frames {
		if len(f) == 0 {
			rp.Close()
			return nil, fmt.Errorf("dpdk: repeater frame %d is empty", i)
		}
		// The frame is copied into C memory first: cgo forbids handing
		// C a Go pointer it keeps, and vd_rep_add keeps nothing, but a
		// C buffer keeps the rule obvious.
		buf := C.CBytes(f)
		rc := C.vd_rep_add(r, pool.mp, (*C.uchar)(buf), C.uint32_t(len(f)), C.uint64_t(meta.Flags),
			C.uint16_t(meta.L2), C.uint16_t(meta.L3), C.uint16_t(meta.L4), C.uint16_t(meta.SegSize))
		C.free(buf)
		if rc != 0 {
			rp.Close()
			return nil, fmt.Errorf("dpdk: repeater frame %d of %d bytes: %w", i, len(f), syscall.Errno(-int(rc)))
		}
	}
	return rp, nil
}

// Send transmits up to n (at most MaxBurst) frames, the next ones round
// robin, and returns how many the device took. One cgo call.
func (r *Repeater) Send(n int) int {
	return int(C.vd_rep_send(r.r, C.uint16_t(min(n, MaxBurst))))
}

// Close drops the repeater's references; the mbufs go back to their pool
// once the driver has freed its own. Stop the port first.
func (r *Repeater) Close() {
	if r.r == nil {
		return
	}
	C.vd_rep_free(r.r)
	C.free(unsafe.Pointer(r.r))
	r.r = nil
}
