package vswitch

import (
	"github.com/vhostd/vhostd/vhost"
)

// TxMark is how far a guest transmit ring had been filled when a drain
// began: the chains before Target are the ones the drain waits for.
type TxMark struct {
	port   *VMPort
	ring   *vhost.Ring
	Start  uint16 // published used index when the mark was taken
	Target uint16 // avail index when the mark was taken
}

// MarkTx appends a mark for each of the port's running guest transmit
// rings to dst.
func (v *VMPort) MarkTx(dst []TxMark) []TxMark {
	r := v.rings.Load()
	if r == nil {
		return dst
	}
	for _, ring := range r.TX {
		if ring.Broken() != nil {
			continue
		}
		avail, used := ring.Backlog()
		if avail-used > ring.Size() {
			continue // not a state a driver may leave: nothing to wait for
		}
		dst = append(dst, TxMark{port: v, ring: ring, Start: used, Target: avail})
	}
	return dst
}

// Progress reports how many of the marked chains the data path has
// returned since the mark and how many it has not. A ring that stopped
// running on its port (the frontend left or reconfigured it) counts as
// done with what it had returned: its memory may be gone, so it is not
// read again.
//
// The ring is read from the caller's goroutine while the port's device
// could unmap it between the check and the read; callers make a fault
// there a panic they recover from (debug.SetPanicOnFault).
func (m TxMark) Progress() (done, left int, running bool) {
	r := m.port.rings.Load()
	running = false
	if r != nil {
		for _, ring := range r.TX {
			if ring.Same(m.ring) {
				running = true
			}
		}
	}
	if !running {
		return 0, 0, false
	}
	_, used := m.ring.Backlog()
	want := m.Target - m.Start
	got := used - m.Start
	if got > want {
		got = want // the ring went on past the mark
	}
	return int(got), int(want - got), true
}

// Wake makes every poller look at its ports now, as a kick would: a drain
// uses it so that chains a driver queued without kicking are taken too.
func (s *Switch) Wake() {
	for _, p := range s.pollers {
		p.wake()
	}
}
