//go:build cgo

package dpdk

/*
#include <stdlib.h>
#include <string.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

#define VD_MAX_BURST 64
#define VD_MAX_SEGS 64
#define VD_STASH 128

struct vd_seg {
	void *addr;
	uint32_t len;
	uint32_t pad;
};

// vd_rxq is a receive queue's scratch, in C memory so that Go never hands
// C a Go pointer (and cgo never scans it).
struct vd_rxq {
	uint16_t port, queue;
	uint16_t held; // mbufs of the last burst not yet freed
	struct rte_mbuf *pkts[VD_MAX_BURST];
	uint16_t nsegs[VD_MAX_BURST]; // 0: more than VD_MAX_SEGS segments
	uint32_t lens[VD_MAX_BURST];
	uint64_t ol[VD_MAX_BURST];     // each frame's ol_flags
	uint16_t segsz[VD_MAX_BURST];  // each frame's tso_segsz (LRO'd frames)
	struct vd_seg segs[VD_MAX_BURST * VD_MAX_SEGS];
};

// vd_rx frees the mbufs still held from the last burst, receives up to n
// frames and describes each frame's segments for Go.
static uint16_t vd_rx(struct vd_rxq *q, uint16_t n)
{
	if (q->held > 0) {
		rte_pktmbuf_free_bulk(q->pkts, q->held);
		q->held = 0;
	}
	if (n > VD_MAX_BURST)
		n = VD_MAX_BURST;
	uint16_t got = rte_eth_rx_burst(q->port, q->queue, q->pkts, n);
	for (uint16_t i = 0; i < got; i++) {
		struct rte_mbuf *m = q->pkts[i];
		struct vd_seg *s = &q->segs[i * VD_MAX_SEGS];
		uint16_t k = 0;
		q->lens[i] = m->pkt_len;
		q->ol[i] = m->ol_flags;
		q->segsz[i] = m->tso_segsz;
		for (; m != NULL && k < VD_MAX_SEGS; m = m->next, k++) {
			s[k].addr = rte_pktmbuf_mtod(m, void *);
			s[k].len = m->data_len;
		}
		q->nsegs[i] = m == NULL ? k : 0;
	}
	q->held = got;
	return got;
}

static void vd_rx_release(struct vd_rxq *q)
{
	if (q->held > 0) {
		rte_pktmbuf_free_bulk(q->pkts, q->held);
		q->held = 0;
	}
}

// vd_txq is a transmit queue's scratch: a stash of allocated mbufs that Go
// copies frames into, and the shape of the burst being built.
struct vd_txq {
	uint16_t port, queue;
	struct rte_mempool *mp;
	uint16_t have;                 // mbufs in stash[0..have)
	struct rte_mbuf *stash[VD_STASH];
	void *data[VD_STASH];          // each stash mbuf's data pointer
	uint16_t lens[VD_STASH];       // data length written into each used mbuf
	uint16_t nseg[VD_MAX_BURST];   // mbufs per frame
	// Each frame's offload request for the device (all zero for a plain
	// frame): ol_flags, and l2_len/l3_len/l4_len/tso_segsz, which are
	// bitfields cgo cannot set.
	uint64_t ol[VD_MAX_BURST];
	uint16_t l2[VD_MAX_BURST], l3[VD_MAX_BURST], l4[VD_MAX_BURST], segsz[VD_MAX_BURST];
	uint64_t sent_bytes; // of the last vd_tx
	uint16_t refused;    // frames of the last vd_tx that rte_eth_tx_prepare refused
};

// vd_refill tops the stash up to VD_STASH mbufs: in bulk, else one by one
// until the pool is empty. Only the new mbufs' headers are touched.
static void vd_refill(struct vd_txq *q)
{
	uint16_t from = q->have, want = VD_STASH - q->have;
	if (want > 0 && rte_pktmbuf_alloc_bulk(q->mp, &q->stash[q->have], want) == 0) {
		q->have = VD_STASH;
	} else {
		while (q->have < VD_STASH) {
			struct rte_mbuf *m = rte_pktmbuf_alloc(q->mp);
			if (m == NULL)
				break;
			q->stash[q->have++] = m;
		}
	}
	for (uint16_t i = from; i < q->have; i++)
		q->data[i] = rte_pktmbuf_mtod(q->stash[i], void *);
}

// vd_tx chains the first used stash mbufs into nf frames, transmits them,
// frees the frames the device did not take, moves the unused stash to the
// front and refills it. It returns the number of frames sent (a prefix).
static uint16_t vd_tx(struct vd_txq *q, uint16_t used, uint16_t nf)
{
	struct rte_mbuf *heads[VD_MAX_BURST];
	uint16_t sent = 0, j = 0, off = 0;
	for (uint16_t f = 0; f < nf; f++) {
		struct rte_mbuf *h = q->stash[j], *prev = NULL;
		uint32_t total = 0;
		for (uint16_t k = 0; k < q->nseg[f]; k++, j++) {
			struct rte_mbuf *m = q->stash[j];
			m->data_len = q->lens[j];
			total += q->lens[j];
			if (prev != NULL)
				prev->next = m;
			prev = m;
		}
		h->nb_segs = q->nseg[f];
		h->pkt_len = total;
		h->ol_flags = q->ol[f];
		if (q->ol[f] != 0) {
			h->l2_len = q->l2[f];
			h->l3_len = q->l3[f];
			h->l4_len = q->l4[f];
			h->tso_segsz = q->segsz[f];
			off++;
		}
		heads[f] = h;
	}
	q->refused = 0;
	q->sent_bytes = 0;
	// With offloads, the driver's tx_prepare makes the headers what the
	// device wants (DPDK's virtio driver puts the length back into a TSO
	// frame's pseudo-header sum). A frame it refuses is freed, counted,
	// and the rest go on.
	for (uint16_t f = 0; off > 0 && f < nf;) {
		uint16_t ok = rte_eth_tx_prepare(q->port, q->queue, &heads[f], nf - f);
		f += ok;
		if (f < nf) {
			rte_pktmbuf_free(heads[f]);
			memmove(&heads[f], &heads[f + 1], (nf - f - 1) * sizeof(heads[0]));
			nf--;
			q->refused++;
		}
	}
	if (nf > 0) {
		// The bytes are summed before the burst: the driver may free
		// what it took at once.
		uint64_t cum[VD_MAX_BURST + 1];
		cum[0] = 0;
		for (uint16_t f = 0; f < nf; f++)
			cum[f + 1] = cum[f] + heads[f]->pkt_len;
		sent = rte_eth_tx_burst(q->port, q->queue, heads, nf);
		q->sent_bytes = cum[sent];
		if (sent < nf)
			rte_pktmbuf_free_bulk(&heads[sent], nf - sent);
	}
	uint16_t left = q->have - used;
	memmove(&q->stash[0], &q->stash[used], left * sizeof(q->stash[0]));
	memmove(&q->data[0], &q->data[used], left * sizeof(q->data[0]));
	q->have = left;
	vd_refill(q);
	return sent;
}

static void vd_tx_release(struct vd_txq *q)
{
	if (q->have > 0)
		rte_pktmbuf_free_bulk(q->stash, q->have);
	q->have = 0;
}
*/
import "C"

import (
	"unsafe"

	"github.com/vhostd/vhostd/virtqueue/bulkcopy"
)

// MaxBurst is the most frames one Receive or one transmit burst handles.
const MaxBurst = C.VD_MAX_BURST

// MaxSegs is the most mbuf segments of one received frame; longer chains
// are reported as too many segments.
const MaxSegs = C.VD_MAX_SEGS

// stashSize is how many mbufs a TxQueue keeps allocated for the next burst.
const stashSize = C.VD_STASH

// RxQueue receives bursts from one ethdev receive queue. Only one goroutine
// may use it at a time (the poller that owns the port).
type RxQueue struct {
	q *C.struct_vd_rxq
	n int
}

// NewRxQueue returns the receive side of queue 0 of p.
func (p *Port) NewRxQueue() *RxQueue {
	q := (*C.struct_vd_rxq)(C.calloc(1, C.sizeof_struct_vd_rxq))
	q.port, q.queue = p.id, 0
	return &RxQueue{q: q}
}

// Receive frees the frames of the previous burst (if Release was not
// called), then receives up to max (at most MaxBurst) frames. One cgo
// call.
func (r *RxQueue) Receive(max int) int {
	r.n = int(C.vd_rx(r.q, C.uint16_t(max)))
	return r.n
}

// Frame appends frame i's segments to dst as views of mbuf memory, valid
// until the next Receive or Release, and returns them with the frame's
// length. ok is false when the frame has more than MaxSegs segments (dst is
// returned unchanged). It does not allocate if dst has room.
func (r *RxQueue) Frame(i int, dst [][]byte) (segs [][]byte, n int, ok bool) {
	k := int(r.q.nsegs[i])
	if k == 0 {
		return dst, int(r.q.lens[i]), false
	}
	base := i * MaxSegs
	for j := 0; j < k; j++ {
		s := &r.q.segs[base+j]
		dst = append(dst, unsafe.Slice((*byte)(s.addr), int(s.len)))
	}
	return dst, int(r.q.lens[i]), true
}

// Offload returns frame i's mbuf offload flags (ol_flags: MbufRxLRO,
// MbufRxL4Cksum*) and, for a frame the driver received as one large
// segment (LRO), the segment size its sender asked for (tso_segsz).
func (r *RxQueue) Offload(i int) (flags uint64, segSize int) {
	return uint64(r.q.ol[i]), int(r.q.segsz[i])
}

// Release frees the mbufs of the last burst now. One cgo call, none when
// nothing is held.
func (r *RxQueue) Release() {
	if r.q.held > 0 {
		C.vd_rx_release(r.q)
	}
	r.n = 0
}

// Close releases held mbufs and the queue's scratch. The port must be
// stopped or no longer polled.
func (r *RxQueue) Close() {
	if r.q == nil {
		return
	}
	C.vd_rx_release(r.q)
	C.free(unsafe.Pointer(r.q))
	r.q = nil
}

// TxQueue transmits bursts on one ethdev transmit queue. Frames are copied
// once, in Go, into mbufs of a stash allocated ahead; Flush sends them and
// refills the stash in one cgo call. Only one goroutine may use it at a
// time: callers serialise.
type TxQueue struct {
	q      *C.struct_vd_txq
	room   int // bytes per mbuf
	used   int // stash mbufs used by the burst being built
	frames int
	last   int // the stash index where the last frame added starts
}

// NewTxQueue returns the transmit side of queue 0 of p, with mbufs from
// pool. Its stash is filled at once.
func (p *Port) NewTxQueue(pool *Mempool) *TxQueue {
	q := (*C.struct_vd_txq)(C.calloc(1, C.sizeof_struct_vd_txq))
	q.port, q.queue, q.mp = p.id, 0, pool.mp
	C.vd_refill(q)
	return &TxQueue{q: q, room: pool.room}
}

// Segs returns how many mbufs Add chains for a frame of n bytes.
func (t *TxQueue) Segs(n int) int { return (n + t.room - 1) / t.room }

// Add copies a frame of n bytes, gathered from segs, into stash mbufs
// (chained when n exceeds one mbuf's room). It returns false, copying
// nothing, when the burst is full (MaxBurst frames) or the stash has too
// few mbufs left: Flush, then try again. The frame is committed only once
// copied, so a fault reading segs (a guest truncated the memory they lie
// in, recovered by the caller) leaves the queue as it was.
func (t *TxQueue) Add(segs [][]byte, n int) bool {
	if t.frames == MaxBurst || n <= 0 {
		return false
	}
	need := (n + t.room - 1) / t.room
	if t.used+need > int(t.q.have) {
		return false
	}
	j := t.used
	t.last = j
	dst := unsafe.Slice((*byte)(t.q.data[j]), t.room)
	off, left := 0, n
	for _, s := range segs {
		if len(s) > left {
			s = s[:left]
		}
		left -= len(s)
		for len(s) > 0 {
			if off == t.room {
				t.q.lens[j] = C.uint16_t(off)
				j++
				dst = unsafe.Slice((*byte)(t.q.data[j]), t.room)
				off = 0
			}
			c := bulkcopy.Copy(dst[off:], s)
			off += c
			s = s[c:]
		}
		if left == 0 {
			break
		}
	}
	t.q.lens[j] = C.uint16_t(off)
	j++
	t.q.nseg[t.frames] = C.uint16_t(j - t.used)
	t.q.ol[t.frames] = 0
	t.frames++
	t.used = j
	return true
}

// AddOffload is Add for a frame the device is to finish: m is set on its
// head mbuf at Flush. The frame's first bytes, up to one mbuf's room,
// are returned (nil when Add failed): the caller may fix headers in the
// copy (never in segs, which may be a guest's memory).
func (t *TxQueue) AddOffload(segs [][]byte, n int, m *TxMeta) []byte {
	j := t.used
	if !t.Add(segs, n) {
		return nil
	}
	f := t.frames - 1
	t.q.ol[f] = C.uint64_t(m.Flags)
	t.q.l2[f], t.q.l3[f], t.q.l4[f] = C.uint16_t(m.L2), C.uint16_t(m.L3), C.uint16_t(m.L4)
	t.q.segsz[f] = C.uint16_t(m.SegSize)
	return unsafe.Slice((*byte)(t.q.data[j]), int(t.q.lens[j]))
}

// DropLast takes back the frame the last successful Add or AddOffload
// added (its mbufs return to the stash). Only once per Add.
func (t *TxQueue) DropLast() {
	if t.frames == 0 {
		return
	}
	t.frames--
	t.used = t.last
}

// Pending returns the number of frames added since the last Flush.
func (t *TxQueue) Pending() int { return t.frames }

// Flush transmits the frames added since the last Flush, frees those the
// device did not take, and refills the stash. It returns how many frames
// and bytes were sent; the others were refused by the driver's
// tx_prepare (Refused, only frames with offloads) or not taken by the
// device. One cgo call; none when
// nothing was added and the stash is full.
func (t *TxQueue) Flush() (sent int, bytes uint64) {
	if t.frames == 0 && int(t.q.have) == stashSize {
		return 0, 0
	}
	sent = int(C.vd_tx(t.q, C.uint16_t(t.used), C.uint16_t(t.frames)))
	bytes = uint64(t.q.sent_bytes)
	t.used, t.frames = 0, 0
	return sent, bytes
}

// Refused returns how many frames of the last Flush the driver's
// tx_prepare refused (a malformed offload request): they were freed.
func (t *TxQueue) Refused() int { return int(t.q.refused) }

// Stashed returns how many mbufs the stash holds (free ones the queue
// keeps for the next burst).
func (t *TxQueue) Stashed() int { return int(t.q.have) }

// Close frees the stash and the queue's scratch.
func (t *TxQueue) Close() {
	if t.q == nil {
		return
	}
	C.vd_tx_release(t.q)
	C.free(unsafe.Pointer(t.q))
	t.q = nil
}
