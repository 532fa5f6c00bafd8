package vswitch

import (
	"encoding/binary"
	"math/bits"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/sirupsen/logrus"

	"github.com/vhostd/vhostd/switch/flowhash"
	"github.com/vhostd/vhostd/switch/offload"
	"github.com/vhostd/vhostd/vhost"
	"github.com/vhostd/vhostd/virtqueue"
	"github.com/vhostd/vhostd/virtqueue/bulkcopy"
	"github.com/vhostd/vhostd/virtqueue/guestmem"
	"github.com/vhostd/vhostd/virtqueue/prefetch"
)

// The Split functions below are the template of the packed copies in
// vmport_packed.go (see internal/ringgen).
//go:generate go run ./internal/ringgen -in vmport.go -out vmport_packed.go

const (
	// maxMergeBufs is the most receive chains one frame may span with
	// MRG_RXBUF (enough for a 64 KiB frame in 1 KiB buffers).
	maxMergeBufs = 64
	// rxChainSegs is the most segments used of one receive chain.
	rxChainSegs = 8
	// rxChains is how many receive chains one pass of Transmit reserves.
	rxChains = 4 * maxMergeBufs
)

// VMPort is a switch port backed by a vhost-user device: frames the guest
// transmits are received by the switch, and frames the switch transmits
// land in the guest's receive queues. It is the vhost.Backend of its
// socket's devices.
//
// With several pollers and a multi-queue device the port has one lane per
// poller (up to the queue pairs): lane k receives from the transmit queues
// of pairs k, k+n, k+2n, ..., so a VM's traffic spreads over the pollers.
// Frames to a guest running several receive queues go to the queue their
// flow hashes to (flowhash), whichever poller forwards them, so its flows
// spread over its queues and vCPUs and each flow keeps one queue.
type VMPort struct {
	name     string
	log      *logrus.Entry
	ctl      Control
	pairs    int // queue pairs the device may run
	pollers  int
	rings    atomic.Pointer[vhost.Rings]
	counters Counters // rare events, from any goroutine (atomic adds)
	// rarp is an announcement to send: rarpPending|MAC, or 0 (rarp.go).
	rarp atomic.Uint64

	// OnFault, if set, is called when the port's frontend must be
	// dropped, on a goroutine of its own: its guest memory faulted on the
	// data path (it truncated or unmapped it; err is a *guestmem.Fault),
	// or a poller blocked writing its call eventfd (see callguard.go).
	// The daemon drops the connection. Set it before the port's first
	// Publish.
	OnFault func(error)
	// retiring holds the rings Publish is replacing until no poller can
	// hold them, and faultMem the guest memory that last faulted: a fault
	// in either is still this port's (see faultOwner), and Publish never
	// runs rings over faultMem again (it stops claiming faults once the
	// device unmaps it).
	retiring atomic.Pointer[vhost.Rings]
	faultMem atomic.Pointer[guestmem.Memory]

	// Fixed at Attach.
	lanes  []*vmLane
	txqs   []*txQueue // by receive queue: see Transmit
	spread []spread   // by poller: Transmit's scratch for flow hashing
	// batch is the poller's call batch (callbatch.go) when the switch
	// has one poller, which then alone transmits into the receive
	// queues; with several, a queue's call is decided under its lock.
	batch *callBatch
}

// vmLane is the receive side of a VMPort, or one lane of it: owned by one
// poller.
type vmLane struct {
	v        *VMPort
	id, n    int // the lane takes the transmit queues of pairs id mod n
	counters Counters
	cur      *vhost.Rings // rings of the burst in progress
	// touched has bit i set when cur.TX[i] had chains popped; a
	// device runs at most vhost.MaxQueuePairs transmit rings.
	touched [(vhost.MaxQueuePairs + 63) / 64]uint64
	chains  [BurstSize]virtqueue.Chain // the chains of a receive burst
	pooled  int                        // chains (and segment pools) of the burst taken
	// segs backs chains[i].Segs, MaxSegs each, bound once by newVMLane:
	// Pop and PopBurst reslice within that capacity and never grow it,
	// so the burst loop does not hand out storage per chain.
	segs [BurstSize * MaxSegs][]byte
	// txLogged holds, per queue pair, the transmit ring whose break
	// was logged and counted (see broken).
	txLogged [vhost.MaxQueuePairs]*vhost.Ring
	calls    callGuard // signals the guest's transmit rings
	// rarpFrame holds the announcement of the burst in progress (rarp.go).
	rarpFrame [RARPFrameLen]byte
	rxo       *rxOffload // the burst's virtio-net headers (vmoffload.go)
	pf        prefetch.Batch
}

// txQueue is the state of transmitting into one of the guest's receive
// queues. Only one poller transmits into it unless there are more pollers
// than queues (shared), when mu serialises them.
type txQueue struct {
	mu       sync.Mutex
	counters Counters
	rx       [rxChains]virtqueue.Chain
	rxRoom   [rxChains]int // writable bytes of each reserved chain
	rxSegs   [rxChains * rxChainSegs][]byte
	rxGPAs   [rxChains * rxChainSegs]uint64 // guest addresses of rxSegs, for the dirty log
	rxAll    [maxMergeBufs * rxChainSegs][]byte
	plan     [BurstSize]rxPlan
	pf       prefetch.Batch // receive buffers' lines, see prefetchFrame
	rxLogged *vhost.Ring
	spin     atomic.Uint32 // read by waitBuffers' pause loop
	calls    callGuard     // signals the receive ring
	ox       *SoftOffload  // offloads the receiver does not take (vmoffload.go)
	// The ring transmitted into last, its memory, and the gap between its
	// avail and used indices between two transmits (see syncTx).
	ring *vhost.Ring
	mem  *guestmem.Memory
	gap  uint16
}

func newTxQueue() *txQueue {
	t := &txQueue{ox: NewSoftOffload(false)}
	for i := range t.rx {
		t.rx[i].Segs = t.rxSegs[i*rxChainSegs : i*rxChainSegs : (i+1)*rxChainSegs]
		t.rx[i].GPAs = t.rxGPAs[i*rxChainSegs : i*rxChainSegs : (i+1)*rxChainSegs]
	}
	return t
}

// NewVMPort returns a port named name with no device attached, for a
// device of up to queuePairs queue pairs (0: vhost.DefaultQueuePairs).
func NewVMPort(name string, queuePairs int, log *logrus.Entry) *VMPort {
	if queuePairs <= 0 {
		queuePairs = vhost.DefaultQueuePairs
	}
	queuePairs = min(queuePairs, vhost.MaxQueuePairs)
	v := &VMPort{name: name, log: log.WithField("port", name), pairs: queuePairs, pollers: 1}
	v.setLanes(1, 1)
	return v
}

// newVMLane returns lane id of n of v, each chain bound to its segments.
func newVMLane(v *VMPort, id, n int) *vmLane {
	l := &vmLane{v: v, id: id, n: n, rxo: newRxOffload()}
	for i := range l.chains {
		l.chains[i].Segs = l.segs[i*MaxSegs : i*MaxSegs : (i+1)*MaxSegs]
	}
	return l
}

// setLanes gives the port n lanes, a transmit queue state for each
// receive queue the device may run (flow hashing may pick any of them,
// whatever the pollers), and flow-hashing scratch for each of pollers.
func (v *VMPort) setLanes(n, pollers int) {
	v.lanes, v.txqs = make([]*vmLane, n), make([]*txQueue, max(n, v.pairs))
	for i := range v.lanes {
		v.lanes[i] = newVMLane(v, i, n)
	}
	for i := range v.txqs {
		v.txqs[i] = newTxQueue()
	}
	v.spread = make([]spread, pollers)
	for i := range v.spread {
		s := &v.spread[i]
		s.counts, s.start, s.next = make([]int, len(v.txqs)), make([]int, len(v.txqs)), make([]int, len(v.txqs))
	}
}

var _ LanedPort = (*VMPort)(nil)

// Name returns the port name.
func (v *VMPort) Name() string { return v.name }

// Attach implements Port.
func (v *VMPort) Attach(c Control) {
	v.ctl = c
	v.pollers = max(c.Pollers(), 1)
	v.setLanes(min(v.pollers, v.pairs), v.pollers)
	v.batch = nil
	if pc, ok := c.(*portControl); ok && len(pc.s.pollers) == 1 {
		v.batch = &pc.s.pollers[0].calls
	}
}

// Receivers implements LanedPort: one lane per poller, up to the queue pairs.
func (v *VMPort) Receivers() []Receiver {
	rs := make([]Receiver, len(v.lanes))
	for i, l := range v.lanes {
		rs[i] = l
	}
	return rs
}

// Stats implements Port.
func (v *VMPort) Stats() Snapshot {
	cs := []*Counters{&v.counters}
	for _, l := range v.lanes {
		cs = append(cs, &l.counters)
	}
	for _, t := range v.txqs {
		cs = append(cs, &t.counters)
	}
	return SumCounters(cs...)
}

// QueueSnapshot is the counters of one of a VM port's queues: a receive
// lane (what the switch took from the guest's transmit queues of the
// pairs it serves) or a transmit queue (what the switch put in one of the
// guest's receive queues).
type QueueSnapshot struct {
	Queue int    `json:"queue"`
	Dir   string `json:"dir"` // "rx" (lane) or "tx" (guest receive queue)
	Snapshot
}

// QueueStats returns the port's counters per queue: its receive lanes,
// then the guest receive queues it transmits into. Drops counted for the
// port as a whole (tx_not_ready, guest_memory_fault, internal_error,
// rx_queue_broken, and rx_spoofed for a refused RARP announcement) are in
// Stats only.
func (v *VMPort) QueueStats() []QueueSnapshot {
	var out []QueueSnapshot
	for i, l := range v.lanes {
		out = append(out, QueueSnapshot{Queue: i, Dir: "rx", Snapshot: SumCounters(&l.counters)})
	}
	// The guest receive queues: as many as lanes, those running and
	// those that carried anything (a port has room for all its pairs).
	running := 0
	if r := v.rings.Load(); r != nil {
		running = len(r.RX)
	}
	for i, t := range v.txqs {
		snap := SumCounters(&t.counters)
		if i < len(v.lanes) || i < running || snap.TxPackets != 0 || anyDrops(snap.Drops) {
			out = append(out, QueueSnapshot{Queue: i, Dir: "tx", Snapshot: snap})
		}
	}
	return out
}

// anyDrops reports whether any of drops is not zero.
func anyDrops(drops map[string]uint64) bool {
	for _, n := range drops {
		if n != 0 {
			return true
		}
	}
	return false
}

// fail logs why the port's frontend must go and asks for it.
func (v *VMPort) fail(err error) {
	v.log.WithError(err).Error("dropping the frontend")
	if f := v.OnFault; f != nil {
		go f(err) // the caller may be what the teardown waits for
	}
}

// Running reports whether a device has rings running on the port.
func (v *VMPort) Running() bool { return v.rings.Load() != nil }

// Publish implements vhost.Backend.
func (v *VMPort) Publish(r *vhost.Rings) {
	if r != nil && v.faultedMem(r.Mem) {
		// The memory faulted and the connection is being dropped: the
		// data path must not touch it again.
		v.log.Warn("not running rings over guest memory that faulted")
		r = nil
	}
	if r != nil {
		// The switch looks at the guest's receive rings whenever it has a
		// frame for them and never sleeps on their kick fds: ask the
		// driver not to kick them. Each kick the driver saves is a
		// syscall (DPDK's virtio-user) or a VM exit (a guest) per refill.
		// No poller uses these rings before the Store below.
		for _, ring := range r.RX {
			ring.DisableNotify()
		}
	}
	// The old rings are retiring before they stop being current: a fault
	// in their memory is this port's at every moment.
	old := v.rings.Load()
	v.retiring.Store(old)
	v.rings.Store(r)
	if v.ctl != nil {
		v.ctl.Changed()
	}
	v.retiring.Store(nil)
	if r == nil {
		// No poller transmits into the port now: repair what a fault
		// left in the old receive queues before the device reads their
		// indices back.
		v.settleRetired(old)
	}
	if r != nil {
		v.log.WithFields(logrus.Fields{"rx_rings": len(r.RX), "tx_rings": len(r.TX), "hdr_len": r.HdrLen, "mrg_rxbuf": r.MrgRxbuf, "lanes": len(v.lanes)}).Debug("rings running")
	}
}

// Disconnected is called by the vhost server when the port's frontend
// connection closes (vhost.Disconnecter): a port with mac=learn forgets
// the address it locked to, for the lifetime of that connection only.
func (v *VMPort) Disconnected() {
	// An announcement not sent yet was the old connection's: sent now, it
	// could lock a learn port to the old guest's address.
	v.rarp.Store(0)
	if v.ctl != nil {
		v.ctl.Disconnected()
	}
}

var _ vhost.Stopper = (*VMPort)(nil)

// Stopped is called by the vhost server when the port's frontend stops
// the device but keeps its connection (vhost.Stopper): a port with
// mac=learn forgets the address it locked to, as at a disconnect. The
// source of a live migration stops so, and its QEMU stays connected,
// paused, until it quits: the guest's address must be free at once for
// the destination port to lock to when the guest announces itself there
// (a lock kept until the source quits would refuse the announcements as
// spoofed). A source that runs the guest again (a failed migration, a
// reboot) locks again on the guest's first frame.
func (v *VMPort) Stopped() {
	if v.ctl != nil {
		v.ctl.Disconnected()
	}
}

// mine reports whether the guest transmit ring with virtqueue index idx
// belongs to the lane.
func (l *vmLane) mine(idx int) bool { return l.n == 1 || (idx/2)%l.n == l.id }

// Counters implements Receiver.
func (l *vmLane) Counters() *Counters { return &l.counters }

// WaitFDs implements Receiver: the kick fds of the lane's guest transmit
// rings.
func (l *vmLane) WaitFDs(dst []int) []int {
	if r := l.v.rings.Load(); r != nil {
		for _, ring := range r.TX {
			if ring.Kick >= 0 && l.mine(ring.Index) {
				dst = append(dst, ring.Kick)
			}
		}
	}
	return dst
}

// NoDrain implements NoDrainer: a lane's wait fds are the frontend's kick
// eventfds, which it shares with us. Reading one could block the poller if
// the frontend cleared O_NONBLOCK on it and drained it first; watched
// edge-triggered, an eventfd wakes the poller on every write anyway, so
// it is never read (its counter only grows, by one per kick). Arm re-reads
// the rings after enabling kicks, which covers a kick before the sleep.
func (l *vmLane) NoDrain(int) bool { return true }

// Arm implements Receiver.
func (l *vmLane) Arm() bool {
	if l.announcing() {
		return true
	}
	r := l.v.rings.Load()
	if r == nil {
		return false
	}
	pending := false
	for _, ring := range r.TX {
		if !l.mine(ring.Index) {
			continue
		}
		// A ring without a kick fd is polled: never sleep on it.
		if ring.EnableNotify() || (ring.Kick < 0 && ring.Err() == nil) {
			pending = true
		}
	}
	return pending
}

// Receive implements Receiver: it pops the guest's transmitted chains. Each
// chain is put on the used ring at once (its bytes stay valid, since the
// driver sees nothing until Done publishes the used index).
func (l *vmLane) Receive(b *Burst) int {
	v := l.v
	r := v.rings.Load()
	l.cur = r
	b.N = 0
	n := l.announce(b)
	if r == nil {
		b.N = n
		return n
	}
	start := n
	l.pooled = n
	limit := frameLimit(r)
	var drops rxDrops
	for ti, ring := range r.TX {
		if !l.mine(ring.Index) {
			continue
		}
		if ring.Packed != nil {
			n = l.receivePacked(ring.Packed, ring, ti, r, b, n, limit, &drops)
		} else {
			n = l.receiveSplit(ring.Queue, ring, ti, r, b, n, limit, &drops)
		}
	}
	if drops.asked != 0 {
		n = l.offloads(b, start, n, r, limit)
	}
	if drops.runts > 0 {
		l.counters.Drops[DropRxRunt].addOwned(drops.runts)
	}
	if drops.segs > 0 {
		l.counters.Drops[DropRxSegments].addOwned(drops.segs)
	}
	if drops.mtu > 0 {
		l.counters.Drops[DropMTUExceeded].addOwned(drops.mtu)
	}
	b.N = n
	return n
}

// rxDrops counts a Receive's drops, added to the lane's counters once,
// and notes whether any frame's header asked for an offload (the OR of
// their flags and gso_type bytes): only then are the headers validated.
type rxDrops struct {
	runts, segs, mtu uint64
	asked            uint16
}

// stripHeader returns segs without their first hdr bytes, which they hold.
func stripHeader(segs [][]byte, hdr int) [][]byte {
	for hdr > 0 {
		if len(segs[0]) <= hdr {
			hdr -= len(segs[0])
			segs = segs[1:]
		} else {
			segs[0] = segs[0][hdr:]
			hdr = 0
		}
	}
	return segs
}

// receiveSplit pops up to BurstSize-n chains of ring (the TX ring ti of
// r, whose queue is q) into b from frame n on, and returns the new frame
// count. Written for split queues in vmport.go and copied for packed ones
// into vmport_packed.go by go generate: edit the one in vmport.go.
func (l *vmLane) receiveSplit(q *virtqueue.Queue, ring *vhost.Ring, ti int, r *vhost.Rings, b *Burst, n, limit int, drops *rxDrops) int {
	v := l.v
	pending := q.Pending()
	if pending == 0 {
		if q.Err() != nil {
			v.broken(&l.txLogged[(ring.Index/2)%len(l.txLogged)], ring, DropRxBroken)
		}
		return n
	}
	q.DisableNotify()
	l.touched[(ti/64)%len(l.touched)] |= 1 << uint(ti%64)
	hdr := r.HdrLen
	// Each chain popped takes the next of the lane's chains, with its own
	// segments, frame or not (a dropped chain's is not reused): they bound
	// the chains of one Receive, and a frame's segments stay valid until
	// the next.
	for pending > 0 && l.pooled < BurstSize {
		cs := l.chains[l.pooled : l.pooled+min(pending, BurstSize-l.pooled)]
		got, err := q.PopBurst(r.Mem, cs)
		l.pooled += got
		pending -= got
		// Start the misses on every frame's header and first line
		// (the switch reads the MACs next) before the loop reads the
		// first header: the driver wrote them on another CPU.
		for i := range cs[:got] {
			if c := &cs[i]; c.NRead > 0 && len(c.Segs[0]) > hdr {
				s0 := c.Segs[0]
				l.pf.Read(&s0[0])
				if uintptr(unsafe.Pointer(&s0[0]))>>6 != uintptr(unsafe.Pointer(&s0[hdr]))>>6 {
					l.pf.Read(&s0[hdr])
				}
			}
		}
		l.pf.Issue()
		for i := 0; i < got; i++ {
			c := &cs[i]
			q.PushUsed(c.Head, 0)
			if int(c.ReadLen) < hdr {
				drops.runts++
				continue
			}
			// Strip the virtio-net header, kept for offloads: a frame
			// whose header asks for one is validated by l.offloads.
			fs := c.Segs[:c.NRead]
			f := &b.Frames[n]
			f.Offload = offload.Meta{}
			// fg, the header's flags and gso_type, is read from guest
			// memory once: the guest may change them meanwhile, and
			// the MTU's exemption for GSO must be decided on what
			// decided whether offloads are looked at (offloads checks
			// the MTU again on what it validates).
			var fg uint16
			if s0 := fs[0]; len(s0) > hdr {
				// The common case: the header and the frame's
				// start in one segment.
				l.rxo.hdrs[n] = &s0[0]
				fg = binary.LittleEndian.Uint16(s0)
				fs[0] = s0[hdr:]
			} else {
				l.rxo.keep(n, fs, hdr)
				fg = l.rxo.flagsGSO(n)
				fs = stripHeader(fs, hdr)
				// The switch reads the MACs next: start that
				// miss now (the header had a segment of its
				// own, so the pass above did not see the line).
				if len(fs) > 0 && len(fs[0]) > 0 {
					prefetch.Read(fs[0])
				}
			}
			drops.asked |= fg
			f.Segs = fs
			f.Len = int(c.ReadLen) - hdr
			if f.Len > limit && fg>>8 == 0 && overMTU(fs, f.Len, limit) {
				drops.mtu++
				continue
			}
			n++
		}
		switch err {
		case nil:
		case virtqueue.ErrTooManySegments:
			q.PushUsed(cs[got].Head, 0)
			drops.segs++
			l.pooled++
			pending--
		case virtqueue.ErrBroken:
			v.broken(&l.txLogged[(ring.Index/2)%len(l.txLogged)], ring, DropRxBroken)
			return n
		default: // ErrEmpty
			return n
		}
	}
	return n
}

// Done implements Receiver: it publishes the used entries of the burst and
// calls the driver once per ring that asks for it.
func (l *vmLane) Done(b *Burst) {
	r := l.cur
	if r == nil {
		return
	}
	for w, set := range l.touched {
		for ; set != 0; set &= set - 1 {
			ring := r.TX[w*64+bits.TrailingZeros64(set)]
			ring.Publish()
			if ring.Call >= 0 {
				b.calls.add(ring, &l.calls, l.v, r)
			}
		}
		l.touched[w] = 0
	}
	l.cur = nil
}

// broken logs a ring's break once. The break of a guest's transmit ring
// (DropRxBroken) is counted here, once; the frames a broken receive ring
// loses (DropTxBroken) are counted by the transmits that lose them. Only
// the ring's owner may call it.
func (v *VMPort) broken(logged **vhost.Ring, ring *vhost.Ring, reason int) {
	if *logged == ring {
		return
	}
	*logged = ring
	if reason == DropRxBroken {
		v.counters.Drops[reason].Add(1)
	}
	v.log.WithFields(logrus.Fields{"queue": ring.Index, "reason": ring.Err()}).Error("virtqueue broken by the guest; it stays stopped until the driver resets it")
}

// Transmit implements Port: it copies each frame into one of the guest's
// receive queues, from the source buffers straight into the guest's.
// With one receive queue running, that one (locked only if there are
// several pollers). With several, each frame goes to the queue its flow
// hashes to, in batches: the frames of the call are sorted by queue
// (keeping their order), and each queue's batch is copied under that
// queue's lock, taken once per batch and only with several pollers.
func (v *VMPort) Transmit(q int, frames []*Frame) {
	r := v.rings.Load()
	if r == nil || len(r.RX) == 0 {
		v.counters.Drops[DropTxNotReady].Add(uint64(len(frames)))
		return
	}
	if m := min(len(r.RX), len(v.txqs)); m > 1 {
		s := &v.spread[q%len(v.spread)]
		for len(frames) > 0 {
			n := min(len(frames), BurstSize)
			s.sort(frames[:n], m)
			for slot, c := range s.counts[:m] {
				if c > 0 {
					v.transmitSlot(slot, r, s.sorted[s.start[slot]:s.start[slot]+c])
				}
			}
			frames = frames[n:]
		}
		return
	}
	v.transmitSlot(0, r, frames)
}

// transmitSlot transmits frames into receive queue slot of r, under the
// queue's lock if other pollers may transmit into it too.
func (v *VMPort) transmitSlot(slot int, r *vhost.Rings, frames []*Frame) {
	t := v.txqs[slot]
	if v.pollers > 1 {
		t.mu.Lock()
		defer t.mu.Unlock() // also when a guest memory fault unwinds
	}
	if ring := r.RX[slot]; ring.Packed != nil {
		t.transmitPacked(ring.Packed, v, r, ring, frames)
	} else {
		t.transmitSplit(ring.Queue, v, r, ring, frames)
	}
}

// spread is one poller's scratch for sorting a burst by receive queue.
type spread struct {
	slot   [BurstSize]uint16 // receive queue of each frame
	sorted [BurstSize]*Frame // the frames, grouped by queue, in order
	// Per receive queue (one each per txQueue): frames, where its group
	// begins in sorted, and the next free place of the group.
	counts, start, next []int
}

// sort hashes each of frames (at most BurstSize) to one of m queues and
// groups them by queue in s.sorted, keeping their order within a queue
// (a counting sort: two passes, no allocation).
func (s *spread) sort(frames []*Frame, m int) {
	clear(s.counts[:m])
	for i, f := range frames {
		k := flowhash.Queue(flowhash.Of(f.Segs), m)
		s.slot[i] = uint16(k)
		s.counts[k]++
	}
	at := 0
	for k, c := range s.counts[:m] {
		s.start[k] = at
		at += c
	}
	copy(s.next[:m], s.start[:m])
	for i, f := range frames {
		k := s.slot[i]
		s.sorted[s.next[k]] = f
		s.next[k]++
	}
}

// transmitSplit transmits frames into ring, whose queue is q. It works
// in two passes so that the guest-buffer cache misses of a burst overlap:
// first it reserves receive chains for every frame and prefetches them for
// writing, then it copies. Written for split queues in vmport.go and
// copied for packed ones into vmport_packed.go by go generate, as are the
// methods it calls with q: edit the ones in vmport.go.
func (t *txQueue) transmitSplit(q *virtqueue.Queue, v *VMPort, r *vhost.Rings, ring *vhost.Ring, frames []*Frame) {
	if ring != t.ring || q.LastAvail()-q.UsedIdx() != t.gap {
		t.syncTx(ring, r.Mem)
	}
	var sent, bytes, nobuf, toobig, broken, mtu uint64
	limit := frameLimit(r)
	avail := q.Pending()
	if q.Err() != nil {
		v.broken(&t.rxLogged, ring, DropTxBroken)
		broken = uint64(len(frames))
		frames = nil
	}
	hdr := r.HdrLen
	waited := false // wait for buffers at most once per call
	fast := true    // try the fast path (until a frame misses it)
	for frames = t.ox.Begin(frames, rxOffloads(r)); len(frames) > 0; frames = t.ox.Next(frames) {
		if fast && avail > 0 && !t.ox.active && !q.Logging() {
			k, b := t.transmitRunSplit(q, r, frames, hdr, limit, avail)
			sent += uint64(k)
			bytes += b
			avail -= k
			if frames = frames[k:]; len(frames) == 0 {
				continue
			}
		}
		// Pass 1: reserve chains. lost: the frames past nf the queue
		// broke before (frames itself is not cut: the offload fixups
		// find a frame's state by its place in it).
		used, nf, ahead, lost := 0, 0, 0, 0
		for ; nf < len(frames); nf++ {
			if f := frames[nf]; f.Len > limit && !f.Offload.GSO() && overMTU(f.Segs, f.Len, limit) {
				t.plan[nf] = rxPlan{}
				mtu++
				continue
			}
			need := hdr + frames[nf].Len
			if avail == 0 && !waited {
				avail, waited = t.waitBuffersSplit(q), true
			}
			// Fast path: one chain with room for the whole frame,
			// from chains taken a burst at a time, t.rx[used:ahead].
			if fast && avail > 0 && used < len(t.rx) {
				if used == ahead {
					got, err := q.PopBurst(r.Mem, t.rx[used:used+min(avail, len(frames)-nf, len(t.rx)-used)])
					ahead += got
					if err == virtqueue.ErrTooManySegments {
						q.Unpop(1) // taken: the general path takes it again
					}
				}
				if used < ahead {
					if c := &t.rx[used]; int(c.WriteLen) >= need && c.NRead < len(c.Segs) {
						avail--
						t.rxRoom[used] = int(c.WriteLen)
						t.prefetchFrame(c.Segs[c.NRead], hdr)
						if t.pf.Len() >= pfEvery {
							t.pf.Issue()
						}
						t.plan[nf] = rxPlan{first: used, k: 1}
						used++
						continue
					}
				}
				// Give back the chains taken ahead and let the general
				// path, which handles every case, decide; for the rest
				// of the call too, as frames that need it come in runs
				// (large segments).
				q.Unpop(ahead - used)
				ahead, fast = used, false
			}
			k, room := 0, 0
			var err error
			for room < need && avail > 0 && (k == 0 || r.MrgRxbuf) && k < maxMergeBufs && used+k < len(t.rx) {
				c := &t.rx[used+k]
				c.Segs = c.Segs[:0]
				err = q.Pop(r.Mem, c)
				if err == virtqueue.ErrBroken || err == virtqueue.ErrEmpty {
					break
				}
				avail--
				w := int(c.WriteLen)
				if err == virtqueue.ErrTooManySegments {
					w = 0
					for _, s := range c.Segs[c.NRead:] {
						w += len(s)
					}
				}
				t.rxRoom[used+k] = w
				if c.NRead < len(c.Segs) {
					t.prefetchFrame(c.Segs[c.NRead], hdr)
				}
				room += w
				k++
			}
			if err == virtqueue.ErrBroken {
				q.Unpop(k)
				v.broken(&t.rxLogged, ring, DropTxBroken)
				lost = len(frames) - nf
				broken += uint64(lost)
				break
			}
			if room >= need {
				t.plan[nf] = rxPlan{first: used, k: k}
				used += k
				continue
			}
			q.Unpop(k)
			avail += k
			if used+k >= len(t.rx) && used > 0 {
				break // out of chain slots: copy what is planned, then go on
			}
			t.plan[nf] = rxPlan{}
			if k == 0 || (r.MrgRxbuf && k < maxMergeBufs) {
				nobuf++
			} else {
				toobig++
			}
		}
		q.Unpop(ahead - used) // taken ahead for frames that needed none
		q.PrefetchUsed(&t.pf, used)
		t.pf.Issue()
		// Pass 2: copy.
		for i := 0; i < nf; i++ {
			p := t.plan[i]
			if p.k == 0 {
				continue
			}
			f := frames[i]
			// A header carrying an offload is written before the copy,
			// and only where it differs (see headerFirst).
			done := t.headerFirst(frames, i, p, hdr)
			// copyIntoSplit's common case, without the call: one
			// buffer big enough, one source segment.
			if c := &t.rx[p.first]; p.k == 1 && len(f.Segs) == 1 && c.NRead < len(c.Segs) && len(c.Segs[c.NRead]) >= hdr+f.Len {
				d := c.Segs[c.NRead]
				if !done {
					putNetHeader(d, hdr, 1)
				}
				bulkcopy.Copy(d[hdr:hdr+f.Len], f.Segs[0])
				q.PushUsed(c.Head, uint32(hdr+f.Len))
			} else {
				t.copyIntoSplit(q, p, f, hdr, done)
			}
			t.finish(frames, i, p, hdr)
			// Logged once every byte of the frame is written (finish
			// writes the header or a checksum after the copy), so no
			// dirty-log sync can fall between a write and its mark.
			// One inlined, predictable branch while logging is off.
			if q.Logging() {
				t.logWrittenSplit(q, p, hdr+f.Len)
			}
			sent++
			bytes += uint64(f.Len)
		}
		frames = frames[nf+lost:]
	}
	if sent > 0 {
		q.Publish()
		if ring.Call >= 0 {
			v.batch.add(ring, &t.calls, v, r)
		}
	}
	// Small frames: the descriptors of the buffers the next transmit into
	// this queue will take, fetched during the rest of the pass instead of
	// in the next transmit's chain of misses (available index, ring entry,
	// descriptor, buffer) on the way to its copies. Large frames' copies
	// take longer than those misses, and the prefetch's own work showed
	// (docs/bench.md, "Descriptors a pass ahead").
	if sent > 0 && bytes <= aheadMaxBytes*sent {
		q.PrefetchAhead(&t.pf, BurstSize)
		t.pf.Issue()
	}
	// The queue's counters have one writer at a time: whoever transmits.
	c := &t.counters
	if sent > 0 {
		c.TxPackets.addOwned(sent)
		c.TxBytes.addOwned(bytes)
	}
	if nobuf > 0 {
		c.Drops[DropTxNoBuffers].addOwned(nobuf)
	}
	if toobig > 0 {
		c.Drops[DropTxTooBig].addOwned(toobig)
	}
	if broken > 0 {
		c.Drops[DropTxBroken].addOwned(broken)
	}
	if mtu > 0 {
		c.Drops[DropMTUExceeded].addOwned(mtu)
	}
	t.ox.Count(c)
}

// transmitRunSplit transmits the longest run at the start of frames
// (at most avail of them) in which every frame is one segment (or two, the
// first holding the addresses of a frame from a port with port security:
// see poller.pin) and fits the
// one writable buffer of the next receive chain, the shape of nearly every
// frame between VMs (the buffer's first segment big enough is all it
// needs), and returns how many it transmitted and their bytes.
// It is transmitSplit's two passes for that case alone, without plans or
// per-frame tests of what it cannot meet: it takes the chains a burst at a
// time, checks and prefetches them, gives back those past the run, then
// copies. The caller has checked that the frames need no offload fixup and
// that q logs no writes. The chains it did not use are back on the ring,
// so the general path goes on from the first frame it did not take.
func (t *txQueue) transmitRunSplit(q *virtqueue.Queue, r *vhost.Rings, frames []*Frame, hdr, limit, avail int) (int, uint64) {
	got, err := q.PopBurst(r.Mem, t.rx[:min(len(frames), avail, len(t.rx))])
	if err == virtqueue.ErrTooManySegments {
		q.Unpop(1) // taken: the general path takes it again
	}
	k := 0
	for ; k < got; k++ {
		f, c := frames[k], &t.rx[k]
		if f.Len > limit || len(f.Segs) > 2 || c.NRead != 0 || len(c.Segs) == 0 || len(c.Segs[0]) < hdr+f.Len {
			break
		}
		t.prefetchFrame(c.Segs[0], hdr)
		if t.pf.Len() >= pfEvery {
			t.pf.Issue()
		}
	}
	q.Unpop(got - k)
	// The used ring's lines too: the driver polls them on its CPU, and
	// the copies' PushUsed stores would each wait for one to come over.
	q.PrefetchUsed(&t.pf, k)
	t.pf.Issue()
	var bytes uint64
	for i, f := range frames[:k] {
		c := &t.rx[i]
		d := c.Segs[0]
		putNetHeader(d, hdr, 1)
		if s := f.Segs; len(s) == 1 {
			bulkcopy.Copy(d[hdr:hdr+f.Len], s[0])
		} else {
			n := copy(d[hdr:], s[0])
			bulkcopy.Copy(d[hdr+n:hdr+f.Len], s[1])
		}
		q.PushUsed(c.Head, uint32(hdr+f.Len))
		bytes += uint64(f.Len)
	}
	return k, bytes
}

// aheadMaxBytes is the largest mean frame length of a transmit after
// which the descriptors of the receive queue's next chains are prefetched.
const aheadMaxBytes = 512

// txRetries bounds how often Transmit re-reads a full receive ring before
// it counts frames as tx_no_buffers: the guest may be refilling it right
// now (a driver refills after it receives, not before), and a short wait
// is cheaper than a lost frame. Open vSwitch retries vhost ports 8 times
// by default too. It costs nothing while the ring has room.
const txRetries = 8

// waitBuffersSplit re-reads the available index of q up to txRetries
// times, pausing about half a microsecond between reads, and returns how
// many chains are now available.
func (t *txQueue) waitBuffersSplit(q *virtqueue.Queue) int {
	for i := 0; i < txRetries; i++ {
		// A short pause without touching the guest's cache lines: loads
		// of a private word (Go has no PAUSE intrinsic; an atomic load
		// keeps the loop from being optimised away and is not a fence).
		for j := 0; j < 256; j++ {
			t.spin.Load()
		}
		if n := q.Pending(); n > 0 {
			return n
		}
	}
	return 0
}

// prefetchFrame prefetches the start of a receive buffer that begins with
// a hdr-byte virtio-net header: the header's line for reading (putNetHeader
// reads it before deciding whether to store) and the frame's first line for
// writing. Not the header's line for writing: taking it would undo what
// putNetHeader saves. Without the read prefetch, that compare was the
// costliest load of the data path (a fifth of vhostd's samples in the
// generator loop at 64 bytes), one synchronous miss per frame.
//
// The lines go into t.pf, issued every pfEvery lines and before the copy
// pass: one call for many lines instead of one per line.
func (t *txQueue) prefetchFrame(seg []byte, hdr int) {
	if len(seg) <= hdr {
		return
	}
	if uintptr(unsafe.Pointer(&seg[0]))>>6 != uintptr(unsafe.Pointer(&seg[hdr]))>>6 {
		t.pf.Read(&seg[0])
	}
	t.pf.Write(&seg[hdr])
}

// pfEvery is how many lines transmit's first pass collects before it
// issues them: early enough that the first frames' misses are under way
// well before the copy pass reaches them.
const pfEvery = 16

// rxPlan is the receive chains reserved for one frame: t.rx[first:first+k].
type rxPlan struct{ first, k int }

// writable returns the writable segments of the chains of p end to end,
// in t.rxAll: where a frame planned into them is written.
func (t *txQueue) writable(p rxPlan) [][]byte {
	all := t.rxAll[:0]
	for j := p.first; j < p.first+p.k; j++ {
		all = append(all, t.rx[j].Segs[t.rx[j].NRead:]...)
	}
	return all
}

// copyIntoSplit writes f with its virtio-net header (unless hdrDone: the
// caller wrote it) into the chains of p and puts them on the used ring.
// Each chain's used length is exactly the bytes
// written at the start of its writable segments, which is what the
// caller marks in the dirty log while the guest migrates, after finish
// (logWrittenSplit): every write into a receive buffer passes there.
func (t *txQueue) copyIntoSplit(q *virtqueue.Queue, p rxPlan, f *Frame, hdr int, hdrDone bool) {
	need := hdr + f.Len
	if p.k == 1 {
		c := &t.rx[p.first]
		// The common case: one buffer big enough, one source segment.
		if d := c.Segs[c.NRead]; len(d) >= need && len(f.Segs) == 1 {
			if !hdrDone {
				putNetHeader(d, hdr, 1)
			}
			bulkcopy.Copy(d[hdr:need], f.Segs[0])
		} else {
			all := c.Segs[c.NRead:]
			if !hdrDone {
				writeNetHeader(all, hdr, 1)
			}
			copyFrame(all, hdr, f.Segs)
		}
		q.PushUsed(c.Head, uint32(need))
	} else {
		// Lay the chains' writable segments end to end and copy once.
		all := t.writable(p)
		if !hdrDone {
			writeNetHeader(all, hdr, p.k)
		}
		copyFrame(all, hdr, f.Segs)
		left := need
		for j := p.first; j < p.first+p.k; j++ {
			w := min(t.rxRoom[j], left)
			left -= w
			q.PushUsed(t.rx[j].Head, uint32(w))
		}
	}
}

// logWrittenSplit marks in q's dirty log the need bytes copyIntoSplit
// wrote into the chains of p, chain by chain as it filled them.
func (t *txQueue) logWrittenSplit(q *virtqueue.Queue, p rxPlan, need int) {
	for j := p.first; j < p.first+p.k; j++ {
		w := min(t.rxRoom[j], need)
		need -= w
		q.LogWritten(&t.rx[j], uint32(w))
	}
}

// putNetHeader writes a virtio-net header with no offloads into d, which
// holds at least hdrLen bytes: all zero but num_buffers, which a 12-byte
// header carries at offset 10.
//
// It stores only the words that differ. A driver recycles its receive
// buffers, so the header is mostly right already (zero, and the same
// num_buffers as last time); the cache line holding it, which the driver
// also reads when it sends the buffer back out, then stays shared between
// the two CPUs instead of moving to ours and back, a cross-core miss per
// frame on the driver's side. DPDK's vhost writes its headers the same
// way.
func putNetHeader(d []byte, hdrLen, numBuffers int) {
	storeHeader(d, hdrLen, 0, uint32(numBuffers)<<16, 0)
}

// storeHeader writes a virtio-net header of hdrLen bytes (10 or 12) into
// d, which holds at least that many: bytes 0-7 from lo, the rest from
// hi12 or, of a 10-byte header, hi10 (little-endian), each word stored
// only if it differs (see putNetHeader).
func storeHeader(d []byte, hdrLen int, lo uint64, hi12 uint32, hi10 uint16) {
	_ = d[hdrLen-1]
	if binary.LittleEndian.Uint64(d) != lo {
		binary.LittleEndian.PutUint64(d, lo)
	}
	if hdrLen == 12 {
		if binary.LittleEndian.Uint32(d[8:]) != hi12 {
			binary.LittleEndian.PutUint32(d[8:], hi12)
		}
	} else if binary.LittleEndian.Uint16(d[8:]) != hi10 {
		binary.LittleEndian.PutUint16(d[8:], hi10)
	}
}

// writeNetHeader writes a virtio-net header (see putNetHeader) at the
// start of dst, which may split it across segments.
func writeNetHeader(dst [][]byte, hdrLen, numBuffers int) {
	if len(dst[0]) >= hdrLen {
		putNetHeader(dst[0], hdrLen, numBuffers)
		return
	}
	var h [12]byte
	if hdrLen == 12 {
		h[10], h[11] = byte(numBuffers), byte(numBuffers>>8)
	}
	src := h[:hdrLen]
	for i := 0; len(src) > 0 && i < len(dst); i++ {
		src = src[copy(dst[i], src):]
	}
}
