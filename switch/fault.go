package vswitch

import (
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/vhostd/vhostd/vhost"
	"github.com/vhostd/vhostd/virtqueue/guestmem"
)

// Guest memory faults on the data path.
//
// A frontend may truncate the memfd behind its guest memory after
// SET_MEM_TABLE; the next access through the mapping is SIGBUS. Pollers run
// with debug.SetPanicOnFault(true), so the fault is a panic instead of the
// end of the process, and the poller loop runs inside one recover frame,
// set up once per (re)start of the loop rather than per burst. On a fault
// the poller:
//
//  1. finds the VM port whose memory holds the faulting address (none: a
//     bug of ours, re-panicked), stops the data path's use of that memory
//     (the port's rings are taken away and never published again over it)
//     and has the port's connection dropped, asynchronously: the control
//     path may be waiting for this very poller to acknowledge a change;
//  2. forgets the half-built burst (lists, counts, touched), as the loop
//     would have at the end of forward;
//  3. restarts the loop, and before anything else settles what the
//     interrupted burst left (settle): the source lane's used entries are
//     published, unless that lane's memory is the one that faulted, and a
//     healthy destination's receive chains reserved but not filled are
//     given back. This runs under the recover frame too: a second fault
//     there is handled the same way.
//
// A shared receive queue's lock is released as the fault unwinds
// (Transmit defers the unlock), so another poller may transmit into that
// queue before the faulting one settles it: transmit checks for a
// predecessor cut short itself (syncTx, two loads and a compare per call),
// and Publish(nil) does before the device reads the indices back.
//
// The restarted loop acknowledges the configuration generation at once, so
// a control path waiting in Changed (for instance the faulted port's own
// teardown) is never held up by a poller that faulted.

// faultOwner returns the VM port among the ports of t whose guest memory
// holds the host address addr, and that memory. The memory the rings run
// over now is looked at first, on every port, then memory that is being
// retired or already faulted: a range released by one port can be mapped
// again by another, and the port using it now is the one to blame.
func faultOwner(t *portTable, addr uintptr) (*VMPort, *guestmem.Memory) {
	if t == nil {
		return nil, nil
	}
	for _, current := range []bool{true, false} {
		for i := 0; i < t.n; i++ {
			if v, ok := t.ports[i].(*VMPort); ok {
				if m := v.memoryAt(addr, current); m != nil {
					return v, m
				}
			}
		}
	}
	return nil, nil
}

// memoryAt returns the guest memory of v that holds addr: that of the
// running rings (current), or else that of rings being replaced by Publish
// or of a fault already seen.
func (v *VMPort) memoryAt(addr uintptr, current bool) *guestmem.Memory {
	if current {
		if r := v.rings.Load(); r != nil && r.Mem.Contains(addr) {
			return r.Mem
		}
		return nil
	}
	if r := v.retiring.Load(); r != nil && r.Mem.Contains(addr) {
		return r.Mem
	}
	if m := v.faultMem.Load(); m.Contains(addr) {
		return m
	}
	return nil
}

// fault takes mem, which faulted at addr, away from v's data path: the
// rings running over it are withdrawn, Publish refuses them from now on,
// and, the first time only, the fault is logged and reported through
// OnFault, on a goroutine of its own: the poller calling fault must not
// wait for the control path.
func (v *VMPort) fault(addr uintptr, mem *guestmem.Memory, poller int) {
	r, first := v.withdraw(mem)
	if !first {
		return
	}
	err := &guestmem.Fault{Addr: addr, Mem: mem}
	fields := logrus.Fields{"poller": poller}
	if q := ringAt(r, addr); q >= 0 {
		fields["queue"] = q
	}
	v.log.WithFields(fields).Error(err.Error() + "; dropping the connection")
	if f := v.OnFault; f != nil {
		go f(err)
	}
}

// withdraw takes the rings running over mem away from v's data path for
// good (Publish refuses rings over mem from now on) and returns them, and
// whether this is the first withdrawal of mem.
func (v *VMPort) withdraw(mem *guestmem.Memory) (r *vhost.Rings, first bool) {
	first = v.faultMem.Swap(mem) != mem
	if cur := v.rings.Load(); cur != nil && cur.Mem == mem {
		// Other pollers may still hold cur for the rest of a burst: they
		// fault in turn or finish; none loads it again.
		v.rings.CompareAndSwap(cur, nil)
		r = cur
	} else if old := v.retiring.Load(); old != nil && old.Mem == mem {
		r = old
	}
	return r, first
}

// ringAt returns the virtqueue index of the ring of r whose descriptor
// table, available or used ring holds addr, or -1.
func ringAt(r *vhost.Rings, addr uintptr) int {
	if r == nil {
		return -1
	}
	for _, rings := range [][]*vhost.Ring{r.RX, r.TX} {
		for _, ring := range rings {
			if ring.RingContains(addr) {
				return ring.Index
			}
		}
	}
	return -1
}

// faultedMem reports whether m is memory that faulted on v.
func (v *VMPort) faultedMem(m *guestmem.Memory) bool { return m != nil && v.faultMem.Load() == m }

// abandon forgets the burst in progress on a lane whose guest memory
// faulted, without touching that memory: its used entries are never
// published (the connection is being dropped, and with it the rings).
func (l *vmLane) abandon() {
	l.touched = [len(l.touched)]uint64{}
	l.cur = nil
}

// syncTx makes t ready to transmit into ring, and repairs it if a fault
// cut its last transmit into that same ring short. Between two calls of
// transmit every chain it popped has been pushed or given back, so the gap
// between the queue's avail and used indices is the same at every start;
// a larger gap is chains reserved for frames that were never copied (the
// source's memory faulted mid-copy). They are given back, in order, so the
// driver sees its buffers used in the order it made them available
// (IN_ORDER), and what was filled before the fault is published.
//
// Only a ring t has transmitted into is repaired, and only while it is
// t's current ring: one replaced since may lie in memory already unmapped.
func (t *txQueue) syncTx(ring *vhost.Ring, mem *guestmem.Memory) {
	gap := ring.Out()
	if ring != t.ring {
		t.ring, t.mem, t.gap = ring, mem, gap
		return
	}
	if gap == t.gap || gap-t.gap > ring.Size() || ring.Err() != nil {
		// Nothing cut short, or a queue that is broken (a Pop that
		// breaks it consumes its chain) or that this repair cannot
		// explain: go on from where it is.
		t.gap = gap
		return
	}
	ring.Unpop(int(gap - t.gap))
	ring.Publish()
	if ring.Call >= 0 && ring.NeedCall() {
		t.calls.call(ring.Call, ring.Index)
	}
}

// settleTx repairs the receive queues a poller transmits into, after a
// fault cut a transmit short. The one cut short may be any of them (flow
// hashing picks the queue per frame), and its lock was released as the
// fault unwound; it locks as Transmit does.
func (v *VMPort) settleTx() {
	r := v.rings.Load()
	if r == nil || len(r.RX) == 0 {
		return
	}
	m := min(len(r.RX), len(v.txqs))
	for slot, t := range v.txqs[:m] {
		v.settleSlot(t, r.RX[slot], r.Mem)
	}
}

// settleSlot is settleTx for one receive queue, under its lock when
// pollers share it; the lock is released if a fault unwinds syncTx.
func (v *VMPort) settleSlot(t *txQueue, ring *vhost.Ring, mem *guestmem.Memory) {
	if v.pollers > 1 {
		t.mu.Lock()
		defer t.mu.Unlock()
	}
	if t.ring == ring {
		t.syncTx(ring, mem)
	}
}

// settleRetired repairs, and then forgets, the receive queues of rings
// that Publish just withdrew. No poller can transmit into them any more,
// and their memory is still mapped.
func (v *VMPort) settleRetired(old *vhost.Rings) {
	for _, t := range v.txqs {
		if old != nil && t.ring != nil && t.mem == old.Mem && !v.faultedMem(old.Mem) {
			t.syncTx(t.ring, t.mem)
		}
		t.ring, t.mem = nil, nil
	}
}

// onFault deals with a value p's loop recovered: a guest memory fault is
// pinned on the port whose memory faulted, a runtime error on the VM port
// whose part of the burst it came in (internalError), and the poller's
// burst scratch is reset; anything else is a bug of ours and panics again.
func (p *poller) onFault(r any, log *logrus.Entry) {
	addr, ok := guestmem.FaultAddr(r)
	reason := DropGuestFault
	var v *VMPort
	if ok {
		var mem *guestmem.Memory
		if v, mem = faultOwner(p.t, addr); v == nil {
			log.WithField("addr", fmt.Sprintf("%#x", addr)).Error("memory fault outside every guest's memory: a bug in vhostd")
			panic(r)
		}
		v.fault(addr, mem, p.id)
	} else {
		v = p.internalError(r, log) // panics again unless a port's burst hit it
		reason = DropInternalError
	}
	// The frames still listed for a destination had not been handed
	// over (forward clears a list once its Transmit returns; the one
	// the fault hit may have copied a few before it): they are lost with
	// the burst, and counted on the port that caused it. A fault while
	// forward sorted the burst (reading the source's frames) loses the
	// whole burst, which no counter has yet.
	var lost uint64
	for _, d := range p.touched {
		lost += uint64(p.counts[d])
		p.counts[d] = 0
	}
	if p.unsorted > 0 {
		lost, p.unsorted = uint64(p.unsorted), 0
	}
	if p.receiving {
		// Cut short while the receiver took its burst: the chains it
		// had taken are never published (the port is withdrawn).
		if l, ok := p.busy.(*vmLane); ok && l.v == v {
			lost = uint64(l.pooled)
		}
	}
	p.receiving, p.txDst = false, -1
	if lost > 0 {
		v.counters.Drops[reason].Add(lost)
	}
	p.touched = p.touched[:0]
	p.settling = true
}

// settle finishes what a fault interrupted, once the loop has restarted
// (under its recover frame: this touches guest memory too). The receiver
// whose burst was in progress is done with, unless its own memory faulted;
// every healthy VM port's receive queue this poller transmits into is
// repaired.
func (p *poller) settle() {
	p.settling = false
	if rx := p.busy; rx != nil {
		p.busy = nil // a second fault in Done must not bring us back here
		if l, ok := rx.(*vmLane); ok && l.cur != nil && l.v.faultedMem(l.cur.Mem) {
			l.abandon()
		} else {
			rx.Done(&p.burst)
		}
	}
	if t := p.t; t != nil {
		for i := 0; i < t.n; i++ {
			if v, ok := t.ports[i].(*VMPort); ok {
				v.settleTx()
			}
		}
	}
	p.calls.settle()
}
