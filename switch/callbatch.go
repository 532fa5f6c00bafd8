package vswitch

import (
	"github.com/vhostd/vhostd/vhost"
	"github.com/vhostd/vhostd/virtqueue"
	"github.com/vhostd/vhostd/virtqueue/guestmem"
)

// maxDeferredCalls bounds a callBatch: a pass of a poller's loop publishes
// at most two rings per port it polls (the transmit ring it took from and
// the receive ring it wrote into) unless frames spread over many ports or
// queues; a full batch is flushed early, which costs one fence more.
const maxDeferredCalls = 64

// callBatch is one poller's rings whose used index was published during
// the current pass of its loop and whose drivers have not been asked yet
// whether they want a call.
//
// Asking needs a full fence after the publishing store (the driver's flags
// are read after it, or a call it waits for could be missed), and a full
// fence waits until every store of the burst into guest memory has left
// the CPU: cache misses on lines the driver's CPU holds. One fence per
// ring and burst was four per pass of a VM-to-VM loop; the batch makes it
// one per pass, at its end (flush). The calls go out a few bursts later
// at most, which the driver cannot tell from a slower device.
//
// Only a poller's own loop uses its batch, so only rings that poller
// alone publishes may be deferred (see VMPort.deferCalls).
type callBatch struct {
	n     int
	calls [maxDeferredCalls]deferredCall
	fence uint32 // Fence's scratch word
}

// deferredCall is a ring waiting for its call decision, the guard that
// signals it, and what faults in its memory are checked against.
type deferredCall struct {
	ring  *vhost.Ring
	guard *callGuard
	port  *VMPort
	mem   *guestmem.Memory
}

// add defers the call decision of ring, just published, to the batch's
// flush. A nil batch decides now.
func (c *callBatch) add(ring *vhost.Ring, g *callGuard, v *VMPort, r *vhost.Rings) {
	if c == nil {
		if ring.NeedCall() {
			g.call(ring.Call, ring.Index)
		}
		return
	}
	if c.n == len(c.calls) {
		c.flush()
	}
	c.calls[c.n] = deferredCall{ring: ring, guard: g, port: v, mem: r.Mem}
	c.n++
}

// flush fences once and calls every deferred ring whose driver wants it.
func (c *callBatch) flush() {
	if c.n == 0 {
		return
	}
	virtqueue.Fence(&c.fence)
	for i := range c.calls[:c.n] {
		d := &c.calls[i]
		if d.ring.NeedCallFenced() {
			d.guard.call(d.ring.Call, d.ring.Index)
		}
	}
	c.n = 0
}

// settle decides the calls a guest memory fault left deferred: those of
// rings in memory that faulted are dropped (their frontend is being
// dropped), the others decided as flush would. A ring flush had decided
// before the fault is not called twice: nothing new was published since.
func (c *callBatch) settle() {
	k := 0
	for _, d := range c.calls[:c.n] {
		if !d.port.faultedMem(d.mem) {
			c.calls[k] = d
			k++
		}
	}
	c.n = k
	c.flush()
}
