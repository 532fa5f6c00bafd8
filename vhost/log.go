package vhost

import (
	"encoding/binary"
	"fmt"

	"github.com/vhostd/vhostd/virtqueue"
	"github.com/vhostd/vhostd/virtqueue/guestmem"
)

// Dirty-page logging for live migration (vhost-user.rst, "Migration").
//
// When the frontend starts migrating the guest it sends SET_LOG_BASE with
// a memfd holding a bitmap of one bit per 4 KiB page of guest-physical
// memory, then SET_FEATURES with VHOST_F_LOG_ALL and SET_VRING_ADDR with
// VHOST_VRING_F_LOG and log_guest_addr for each ring. From then on every
// byte vhostd writes into guest memory must mark its page; the virtqueue
// does the marking (virtqueue/dirty.go), this file hands it the log.
//
// The log is swapped as guest memory is: the rings are taken from the data
// path (Publish(nil) returns once no poller holds them, and the log is
// reached only through them), the new log is installed, the rings are
// started again with it, and only then is the old log unmapped. A poller
// never holds a log that is unmapped.
//
// A log vhostd cannot use (size zero or absurd, an fd too small, not a
// memfd it can seal against shrinking, not mappable) ends the connection
// with the reason logged: replying as if it worked would let the migration
// go on without the log, and copy guest memory vhostd later changes.

// vringFLog is VHOST_VRING_F_LOG, bit 0 of SET_VRING_ADDR's flags: log
// writes to the used ring at log_guest_addr.
const vringFLog = 1 << 0

// logPayloadSize is the wire size of VhostUserLog: u64 mmap_size, u64
// mmap_offset.
const logPayloadSize = 16

// dirtyLog is a device's dirty-page log state.
type dirtyLog struct {
	log    *guestmem.Log // from SET_LOG_BASE, or nil
	warned bool          // logged that LOG_ALL came without a log
}

// replies reports whether request r has a reply of its own on this
// connection, which then stands in for a REPLY_ACK: the request table
// says so for most requests; SET_LOG_BASE replies only once LOG_SHMFD is
// negotiated (vhost-user.rst lists no reply, but QEMU's
// vhost_user_set_log_base reads one back when the feature is on, and
// checks only its request code).
func (d *device) replies(r Request) bool {
	return requests[r].replies || (r == SetLogBase && d.hasProtocol(ProtocolLogShmfd))
}

// setLogBase handles SET_LOG_BASE: it maps the log and makes the running
// rings use it, and returns the reply: a u64 0, as libvhost-user sends,
// which doubles as a successful REPLY_ACK. Without LOG_SHMFD the log
// would be in the frontend's own memory, out of vhostd's reach: the
// request is refused and the connection ends.
func (d *device) setLogBase(m *Message) ([]byte, error) {
	if !d.hasProtocol(ProtocolLogShmfd) {
		closeFDs(m.FDs)
		return nil, fmt.Errorf("needs protocol feature %s, which was not negotiated", protocolNames[ProtocolLogShmfd])
	}
	size := binary.LittleEndian.Uint64(m.Payload[0:])
	offset := binary.LittleEndian.Uint64(m.Payload[8:])
	log, err := guestmem.MapLog(m.FDs[0], size, offset)
	closeFDs(m.FDs)
	if err != nil {
		return nil, fmt.Errorf("dirty log of %#x bytes at offset %#x: %w", size, offset, err)
	}
	d.log.WithField("size", size).Info("dirty-page log mapped (migration)")
	d.stop()
	old := d.dirty.log
	d.dirty.log, d.dirty.warned = log, false
	err = d.start()
	old.Unmap() // no poller holds it: the rings that did are gone
	if err != nil {
		return nil, err
	}
	return u64(0), nil
}

// setLogFD handles SET_LOG_FD: an eventfd to tell the frontend the log
// changed. vhostd never signals it (QEMU reads the log when it syncs, and
// does not send this request), so the fd is closed at once.
func (d *device) setLogFD(m *Message) {
	closeFDs(m.FDs)
}

// logRing makes ring r's new queue, built from cfg, mark its writes while
// the frontend has VHOST_F_LOG_ALL acknowledged. The used ring is logged
// at log_guest_addr when the ring's VHOST_VRING_F_LOG flag says so, and at
// its own guest-physical address otherwise: more than the specification
// asks ("Modifications to "used" vring should be marked if
// VHOST_VRING_F_LOG is part of ring's flags"), but a page marked in vain
// costs one copy, and one missed corrupts the guest.
func (d *device) logRing(r *ring, cfg virtqueue.Config) {
	if !d.logging() {
		return
	}
	used := cfg.Used
	if r.addr.Flags&vringFLog != 0 {
		used = r.addr.Log
	}
	r.q.SetLog(d.dirty.log, used)
}

// logPacked is logRing for a packed ring: its used descriptors are
// written into the descriptor ring and its event suppression into the
// device area, both logged at their own guest-physical addresses (a
// packed ring has no separate used ring for VHOST_VRING_F_LOG's
// log_guest_addr to name).
func (d *device) logPacked(r *ring) {
	if !d.logging() {
		return
	}
	r.pq.SetLog(d.dirty.log)
}

// logging reports whether a new queue must log its writes: VHOST_F_LOG_ALL
// acknowledged and a log mapped (warned about once if missing).
func (d *device) logging() bool {
	if d.features&(1<<FeatureLogAll) == 0 {
		return false
	}
	if d.dirty.log == nil {
		if !d.dirty.warned {
			d.dirty.warned = true
			d.log.Warn("VHOST_F_LOG_ALL acknowledged without a log (SET_LOG_BASE): guest memory writes cannot be logged")
		}
		return false
	}
	return true
}

// unmapLog releases the log; the rings must be stopped.
func (d *device) unmapLog() {
	d.dirty.log.Unmap()
	d.dirty = dirtyLog{}
}
