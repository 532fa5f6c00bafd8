package vhost

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/virtqueue"
)

// Inflight I/O tracking (vhost-user.rst, "Inflight I/O tracking",
// GET_INFLIGHT_FD and SET_INFLIGHT_FD). The frontend asks vhostd for a
// shared region (GET_INFLIGHT_FD), keeps it, and hands it to every
// backend connection after it (SET_INFLIGHT_FD). vhostd records in it the
// chains of the guest's transmit queues it has taken but not yet returned,
// so that a vhostd that restarts mid-burst sends them again instead of
// losing them. The layout per queue is in virtqueue/inflight.go.
//
// Receive queues are not tracked: the device gives a receive chain back
// (Unpop) or fills it within one call, and a frame in flight to a guest
// that the switch had not finished writing is lost with the backend
// anyway (its source is gone).

// inflightPayloadSize is the wire size of VhostUserInflight: u64
// mmap_size, u64 mmap_offset, u16 num_queues, u16 queue_size, padded to 8
// as QEMU and DPDK lay the struct out.
const inflightPayloadSize = 24

// inflightMsg is the payload of GET_INFLIGHT_FD and SET_INFLIGHT_FD.
type inflightMsg struct {
	MmapSize   uint64
	MmapOffset uint64
	NumQueues  uint16
	QueueSize  uint16
}

func (m *Message) inflight() inflightMsg {
	p := m.Payload
	return inflightMsg{
		MmapSize:   binary.LittleEndian.Uint64(p[0:]),
		MmapOffset: binary.LittleEndian.Uint64(p[8:]),
		NumQueues:  binary.LittleEndian.Uint16(p[16:]),
		QueueSize:  binary.LittleEndian.Uint16(p[18:]),
	}
}

func (i inflightMsg) encode() []byte {
	b := make([]byte, inflightPayloadSize)
	binary.LittleEndian.PutUint64(b[0:], i.MmapSize)
	binary.LittleEndian.PutUint64(b[8:], i.MmapOffset)
	binary.LittleEndian.PutUint16(b[16:], i.NumQueues)
	binary.LittleEndian.PutUint16(b[18:], i.QueueSize)
	return b
}

// check validates the queue count and size against what the device has,
// and returns the region size they need.
func (i inflightMsg) check(rings int) (uint64, error) {
	if i.NumQueues == 0 || int(i.NumQueues) > rings {
		return 0, fmt.Errorf("inflight region for %d queues: this port takes 1 to %d", i.NumQueues, rings)
	}
	if i.QueueSize == 0 || i.QueueSize&(i.QueueSize-1) != 0 || uint32(i.QueueSize) > virtqueue.MaxSize {
		return 0, fmt.Errorf("inflight queue size %d is not a power of two up to %d", i.QueueSize, virtqueue.MaxSize)
	}
	return uint64(i.NumQueues) * virtqueue.InflightQueueBytes(i.QueueSize), nil
}

// inflightRegion is a mapped SET_INFLIGHT_FD region.
type inflightRegion struct {
	mem       []byte
	numQueues int
	queueSize uint16
	perQueue  uint64
}

// queue returns ring i's part of the region, or nil if the region has none.
func (r *inflightRegion) queue(i int) []byte {
	if r == nil || i >= r.numQueues {
		return nil
	}
	o := uint64(i) * r.perQueue
	return r.mem[o : o+r.perQueue : o+r.perQueue]
}

func (r *inflightRegion) unmap() {
	if r != nil && r.mem != nil {
		unix.Munmap(r.mem)
		r.mem = nil
	}
}

// getInflightFD answers GET_INFLIGHT_FD: a new zeroed memfd of the size
// the queues need, sealed so that nobody (the frontend included) can
// shrink it under a mapping, and the payload with mmap_size filled in.
// The fd is the reply's; the caller sends and closes it.
func (d *device) getInflightFD(m *Message) ([]byte, int, error) {
	if d.packed() {
		// A reply is due whatever happens (a NACK-less refusal would
		// leave the frontend waiting): mmap_size 0 and no fd is how a
		// back-end says it has no region, which QEMU takes as inflight
		// tracking off (vhost_user_get_inflight_fd).
		req := m.inflight()
		d.log.WithField("queues", req.NumQueues).Warn("GET_INFLIGHT_FD: " + errInflightPacked.Error() + "; replied with no region")
		reply := inflightMsg{NumQueues: req.NumQueues, QueueSize: req.QueueSize}
		return reply.encode(), -1, nil
	}
	req := m.inflight()
	size, err := req.check(len(d.rings))
	if err != nil {
		return nil, -1, err
	}
	fd, err := unix.MemfdCreate("vhostd-inflight", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, -1, fmt.Errorf("inflight memfd: %w", err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		unix.Close(fd)
		return nil, -1, fmt.Errorf("inflight memfd of %d bytes: %w", size, err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		unix.Close(fd)
		return nil, -1, fmt.Errorf("seal inflight memfd: %w", err)
	}
	d.log.WithFields(map[string]any{"queues": req.NumQueues, "queue_size": req.QueueSize, "bytes": size}).Info("GET_INFLIGHT_FD: new inflight region")
	reply := inflightMsg{MmapSize: size, MmapOffset: 0, NumQueues: req.NumQueues, QueueSize: req.QueueSize}
	return reply.encode(), fd, nil
}

// errInflightPacked refuses inflight tracking of packed rings. The
// region's packed layout (vhost-user.rst, "Inflight I/O tracking") keeps
// per-descriptor state and wrap counters that virtqueue's tracking of
// split rings does not have; QEMU asks for a region only for block and
// SCSI devices, and DPDK's virtio-user never, so no frontend of a
// virtio-net device needs it. Refused (NACKed, the connection stays) so
// a frontend that asks learns it plainly.
var errInflightPacked = errors.New("inflight tracking (GET/SET_INFLIGHT_FD) is not supported for packed rings (VIRTIO_F_RING_PACKED acked)")

// setInflightFD maps the frontend's region after checking it holds what
// its payload says: the queue count and size vhostd can serve, an offset
// and size inside the file, and a file sealed against shrinking (a
// region that shrank under the data path would fault it).
func (d *device) setInflightFD(m *Message) error {
	fd := m.FDs[0]
	defer unixClose(fd)
	if d.packed() {
		return &refusal{errInflightPacked}
	}
	req := m.inflight()
	need, err := req.check(len(d.rings))
	if err != nil {
		return err
	}
	if req.MmapSize < need {
		return fmt.Errorf("inflight mmap_size %d, %d queues of %d need %d", req.MmapSize, req.NumQueues, req.QueueSize, need)
	}
	if req.MmapOffset%uint64(unix.Getpagesize()) != 0 {
		return fmt.Errorf("inflight mmap_offset %#x is not page aligned", req.MmapOffset)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("inflight fd: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("inflight fd is not a regular file or memfd (mode %#o)", st.Mode)
	}
	if end := req.MmapOffset + need; end < req.MmapOffset || uint64(st.Size) < end {
		return fmt.Errorf("inflight region %#x+%#x lies beyond its file of %d bytes", req.MmapOffset, need, st.Size)
	}
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil || seals&unix.F_SEAL_SHRINK == 0 {
		return fmt.Errorf("inflight fd is not sealed against shrinking (F_SEAL_SHRINK): it could be truncated under the data path")
	}
	mem, err := unix.Mmap(fd, int64(req.MmapOffset), int(need), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map inflight region: %w", err)
	}
	r := &inflightRegion{mem: mem, numQueues: int(req.NumQueues), queueSize: req.QueueSize, perQueue: virtqueue.InflightQueueBytes(req.QueueSize)}
	d.stop()
	old := d.inflight
	d.inflight = r
	err = d.start()
	old.unmap()
	d.log.WithFields(map[string]any{"queues": req.NumQueues, "queue_size": req.QueueSize}).Info("SET_INFLIGHT_FD: tracking inflight transmit chains")
	return err
}

// attachInflight gives ring i (a guest transmit queue) its part of the
// inflight region, if there is one, and resubmits what a previous backend
// left inflight.
func (d *device) attachInflight(i int, r *ring) error {
	if d.inflight == nil || i%2 == 0 {
		return nil
	}
	part := d.inflight.queue(i)
	if part == nil {
		return fmt.Errorf("inflight region covers %d queues, not queue %d", d.inflight.numQueues, i)
	}
	if r.num > d.inflight.queueSize {
		return fmt.Errorf("size %d exceeds the inflight region's queue size %d", r.num, d.inflight.queueSize)
	}
	base := r.q.LastAvail()
	n, err := r.q.AttachInflight(part)
	if err != nil {
		return fmt.Errorf("inflight region: %w", err)
	}
	if n > 0 || r.q.LastAvail() != base {
		d.log.WithFields(map[string]any{"queue": i, "resubmitted": n, "base": base, "resume": r.q.LastAvail()}).Warn("resubmitting transmit chains a previous backend left inflight")
	}
	return nil
}
