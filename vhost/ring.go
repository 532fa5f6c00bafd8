package vhost

import "github.com/vhostd/vhostd/virtqueue"

// Ring is a running virtqueue as the data path sees it. Exactly one of
// Queue and Packed is set: Packed when the frontend acked
// VIRTIO_F_RING_PACKED, Queue otherwise.
//
// The data path looks at the layout once per burst of a ring (see the
// switch's generated burst loops) and then calls the concrete queue, so
// no frame pays for the choice. The methods below choose per call; they
// are for what runs once per burst or less (arming, publishing, repairs,
// drains, fault attribution), never per frame.
type Ring struct {
	Index  int                    // virtqueue index: even = guest receive, odd = guest transmit
	Queue  *virtqueue.Queue       // split layout, owned by the data path while published; or nil
	Packed *virtqueue.PackedQueue // packed layout, likewise; or nil
	Kick   int                    // eventfd the driver kicks, or -1 when the frontend wants polling
	Call   int                    // eventfd to call the driver, or -1 for none
}

// Size returns the ring's number of descriptors.
func (r *Ring) Size() uint16 {
	if r.Packed != nil {
		return r.Packed.Size()
	}
	return r.Queue.Size()
}

// Err returns why the ring broke, or nil; only its owner may call it.
func (r *Ring) Err() error {
	if r.Packed != nil {
		return r.Packed.Err()
	}
	return r.Queue.Err()
}

// Broken returns why the ring broke, or nil; any goroutine may call it.
func (r *Ring) Broken() error {
	if r.Packed != nil {
		return r.Packed.Broken()
	}
	return r.Queue.Broken()
}

// DisableNotify asks the driver not to notify (kick) the device.
func (r *Ring) DisableNotify() {
	if r.Packed != nil {
		r.Packed.DisableNotify()
		return
	}
	r.Queue.DisableNotify()
}

// EnableNotify asks the driver to notify again and reports whether
// buffers arrived meanwhile.
func (r *Ring) EnableNotify() bool {
	if r.Packed != nil {
		return r.Packed.EnableNotify()
	}
	return r.Queue.EnableNotify()
}

// Publish makes the used buffers pushed so far visible to the driver.
func (r *Ring) Publish() {
	if r.Packed != nil {
		r.Packed.Publish()
		return
	}
	r.Queue.Publish()
}

// NeedCall reports whether the driver wants a call for what was published.
func (r *Ring) NeedCall() bool {
	if r.Packed != nil {
		return r.Packed.NeedCall()
	}
	return r.Queue.NeedCall()
}

// NeedCallFenced is NeedCall for a caller that has executed a full fence
// (virtqueue.Fence) since Publish.
func (r *Ring) NeedCallFenced() bool {
	if r.Packed != nil {
		return r.Packed.NeedCallFenced()
	}
	return r.Queue.NeedCallFenced()
}

// Unpop gives back the n chains popped last and not pushed.
func (r *Ring) Unpop(n int) {
	if r.Packed != nil {
		r.Packed.Unpop(n)
		return
	}
	r.Queue.Unpop(n)
}

// Out returns the chains taken and not yet pushed (LastAvail - UsedIdx,
// in chains for both layouts).
func (r *Ring) Out() uint16 {
	if r.Packed != nil {
		return r.Packed.LastAvail() - r.Packed.UsedIdx()
	}
	return r.Queue.LastAvail() - r.Queue.UsedIdx()
}

// Backlog returns the queue's avail and published used positions, for
// comparison with an earlier Backlog of the same ring only (split counts
// chains, packed descriptor slots). Any goroutine may call it.
func (r *Ring) Backlog() (avail, used uint16) {
	if r.Packed != nil {
		return r.Packed.Backlog()
	}
	return r.Queue.Backlog()
}

// RingContains reports whether the host address addr lies in one of the
// ring's parts (descriptors, driver and device areas).
func (r *Ring) RingContains(addr uintptr) bool {
	if r.Packed != nil {
		return r.Packed.RingContains(addr)
	}
	return r.Queue.RingContains(addr)
}

// Same reports whether r and o run the same queue.
func (r *Ring) Same(o *Ring) bool {
	return r != nil && o != nil && r.Queue == o.Queue && r.Packed == o.Packed
}
