package virtqueue

import "github.com/vhostd/vhostd/virtqueue/guestmem"

// Dirty-page logging: the queue is where every write into guest memory is
// accounted for, so that none escapes the log during a migration.
//
//   - buffer bytes (frames and virtio-net headers): LogWritten, from the
//     chain's recorded guest-physical addresses, which the device calls for
//     every chain it wrote into, after writing and only while Logging;
//   - used elements and the used index: Publish, for every element pushed
//     since the previous Publish, and the flags/index word (elements
//     pushed and never published lie past the used index: the driver never
//     reads them, and the next owner of the ring writes them again);
//   - the flags word (DisableNotify, EnableNotify) and avail_event
//     (EnableNotify with EVENT_IDX).
//
// With logging off, q.log is nil and each of these costs one predictable
// branch: Logging per frame at the device's call site (inlined, so the
// hot path pays no call: a PushUsed that logged itself would be too big
// to inline), and one per burst in Publish.

// SetLog makes the queue mark every write into guest memory in log, with
// the used ring logged at guest-physical address usedGPA (the ring's
// log_guest_addr from SET_VRING_ADDR, normally its own address). A nil log
// turns logging off. It must be called while no poller runs the queue,
// and log must stay mapped while one does.
func (q *Queue) SetLog(log *guestmem.Log, usedGPA uint64) {
	q.log, q.usedLog = log, usedGPA
}

// Logging reports whether the queue logs its writes.
func (q *Queue) Logging() bool { return q.log != nil }

// LogWritten marks in the log the first n bytes of c's device-writable
// segments, which the device has just written: what it reports as the
// chain's used length (virtio 1.2, 2.7.8.1: len is "the number of bytes
// written into the device writable portion of the buffer described by the
// descriptor chain"). c must have been popped with GPAs; a segment without
// one is counted as missed (guestmem.Log.MissedWrites). The queue must be
// Logging.
func (q *Queue) LogWritten(c *Chain, n uint32) { logChain(q.log, c, n) }

// logChain marks in log the first n bytes of c's device-writable segments.
func logChain(log *guestmem.Log, c *Chain, n uint32) {
	rem := uint64(n)
	for i := c.NRead; rem > 0 && i < len(c.Segs); i++ {
		l := min(uint64(len(c.Segs[i])), rem)
		if i < len(c.GPAs) {
			log.Mark(c.GPAs[i], l)
		} else {
			// A chain popped without GPAs: a bug of the caller's,
			// counted rather than crashing the data path.
			log.Missed()
		}
		rem -= l
	}
}

// logPublish marks the used elements of used indices [first, q.usedIdx),
// just published, and the word holding the used index.
func (q *Queue) logPublish(first uint16) {
	from, to := uint64(first&q.mask), uint64(q.usedIdx&q.mask)
	elems := q.usedLog + 4
	switch {
	case q.usedIdx-first >= q.size:
		q.log.Mark(elems, usedElemSize*uint64(q.size))
	case to > from:
		q.log.Mark(elems+usedElemSize*from, usedElemSize*(to-from))
	default: // the batch wraps around the end of the ring
		q.log.Mark(elems+usedElemSize*from, usedElemSize*(uint64(q.size)-from))
		q.log.Mark(elems, usedElemSize*to)
	}
	q.log.Mark(q.usedLog, 4)
}
