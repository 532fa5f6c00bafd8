package vhost

import (
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vhostd/vhostd/virtqueue"
	"github.com/vhostd/vhostd/virtqueue/guestmem"
)

// takeReplyFD returns the fd to send with the current reply, if any, and
// forgets it.
func (d *device) takeReplyFD() int {
	fd := d.replyFD
	d.replyFD = -1
	return fd
}

// Rings is everything the data path may touch of one device, valid from the
// Publish that hands it over until the next Publish returns.
type Rings struct {
	Mem      *guestmem.Memory
	RX       []*Ring // guest receive queues: the device writes frames into them
	TX       []*Ring // guest transmit queues: the device reads frames from them
	HdrLen   int     // virtio-net header length: 12 with VERSION_1 or MRG_RXBUF, else 10
	MrgRxbuf bool    // a frame may span several receive chains
	// MTU is the largest frame payload the port takes or delivers: the
	// frame may be MTU+14 bytes long, MTU+18 if VLAN-tagged. 0: no limit.
	MTU int
	// Features are the negotiated virtio features: the data path reads
	// the offload bits (what the guest may send, what it may be sent).
	Features uint64
}

// Backend is the data path of one port, driven by the device.
type Backend interface {
	// Publish replaces the rings the data path processes; nil stops it.
	// When Publish returns, the data path no longer touches the rings or
	// memory of the previous call, so their state can be read and their
	// memory unmapped.
	Publish(r *Rings)
}

// Options are a port's protocol settings.
type Options struct {
	// DisabledFeatures are virtio feature bits never offered on this port.
	DisabledFeatures uint64
	// QueuePairs is the number of queue pairs reported by GET_QUEUE_NUM.
	QueuePairs int
	// MessageTimeout bounds how long the rest of a message may take once
	// its first byte has arrived; zero means DefaultMessageTimeout.
	MessageTimeout time.Duration
	// ReplyTimeout bounds how long a reply may wait for the frontend to
	// read earlier ones; zero means DefaultMessageTimeout.
	ReplyTimeout time.Duration
	// HandoverWait bounds how long a new connection waits for the
	// previous one's teardown; zero means DefaultHandoverWait.
	HandoverWait time.Duration
	// Perm is the socket file's owner, group and mode (see listen.go).
	Perm SocketPerm
	// MTU is the largest MTU the frontend may set (NET_SET_MTU) and the
	// one the data path enforces until it does; 0 means DefaultMTU.
	MTU int
	// MAC is the port's own address (mac=), reported in the config
	// space (GET_CONFIG); zero when the port has none.
	MAC [6]byte
}

// DefaultQueuePairs is reported by GET_QUEUE_NUM when Options leave it zero.
const DefaultQueuePairs = 8

// MaxQueuePairs is the most queue pairs a port offers; Options asking
// for more get this many. The switch sizes its per-ring state by it.
const MaxQueuePairs = 128

type ring struct {
	num      uint16
	addr     VringAddr
	addrSet  bool
	base     uint32 // SET_VRING_BASE: an index (split) or positions and wrap counters (packed, see virtqueue.PackedBase)
	kick     int    // -1: none yet or polling (see kickSet)
	call     int
	errFD    int
	started  bool // a kick fd (or polling) was set and GET_VRING_BASE has not stopped it
	enabled  bool
	brokenBy error                  // why the data path broke this ring; cleared when the frontend reconfigures it
	q        *virtqueue.Queue       // the running split queue, or nil
	pq       *virtqueue.PackedQueue // the running packed queue, or nil
	kickGen  uint64                 // which SET_VRING_KICK set kick (device.kickGen), for its watch
}

// device is the state of one frontend connection.
type device struct {
	log     *logrus.Entry
	backend Backend
	offered uint64
	pairs   int

	features    uint64
	featuresSet bool
	protocol    uint64
	mem         *guestmem.Memory
	rings       []ring
	running     *Rings
	inflight    *inflightRegion // SET_INFLIGHT_FD's region, or nil
	dirty       dirtyLog        // SET_LOG_BASE's log (log.go)
	// memDups counts, per region, the ADD_MEM_REGs of a region that was
	// already mapped, exactly as it is: QEMU before 8.1 sends ADD_MEM_REG
	// and REM_MEM_REG once per queue pair of a multi-queue device (its
	// vhost_user_one_time_request lacks them), so each is matched by one
	// REM_MEM_REG more before the region goes. Cleared with the table.
	memDups map[guestmem.RegionSpec]int
	// violations are the frontend's breaches of the specifications on
	// this connection (the first maxViolations), violationsSeen all of
	// them (violation.go).
	violations     []Violation
	violationsSeen int
	// ringViol are the data-path violations of each ring's stopped
	// queues, watches follow the kick fds of disabled rings, retired
	// those watches whose fds the server closes at its next setStatus,
	// and kickGen numbers SET_VRING_KICKs (dataviolation.go).
	ringViol []ringViolations
	watches  []*kickWatch
	retired  []*kickWatch
	kickGen  uint64
	// pending reports whether a request from the frontend is waiting
	// unread (see checkKicks); nil once the frontend has hung up.
	pending func() bool
	// replyFD is an fd to send with the reply of the request being
	// handled (GET_INFLIGHT_FD), or -1; the server sends and closes it.
	replyFD int
	net     netState // device status, MTU, config space (status.go, mtu.go, config.go)
}

func newDevice(log *logrus.Entry, b Backend, o Options) *device {
	pairs := o.QueuePairs
	if pairs <= 0 {
		pairs = DefaultQueuePairs
	}
	pairs = min(pairs, MaxQueuePairs)
	d := &device{log: log, backend: b, offered: OfferedFeatures &^ o.DisabledFeatures, pairs: pairs, replyFD: -1}
	d.net = newNetState(o)
	d.rings = make([]ring, 2*pairs)
	d.ringViol = make([]ringViolations, 2*pairs)
	d.watches = make([]*kickWatch, 2*pairs)
	for i := range d.rings {
		d.rings[i] = ring{kick: -1, call: -1, errFD: -1}
	}
	return d
}

func (d *device) protocolOffered() uint64 {
	if d.offered&(1<<FeatureProtocolFeature) == 0 {
		return 0
	}
	return OfferedProtocolFeatures
}

func (d *device) hasProtocol(bit int) bool { return d.protocol&(1<<bit) != 0 }

// handle processes one validated request. The returned payload, if any, is
// sent as the reply. Errors are protocol errors: the connection is dropped.
func (d *device) handle(m *Message) (reply []byte, err error) {
	probeRequest(m) // nothing, but in a test build (bugprobe.go)
	spec := requests[m.Request]
	if spec.protocol >= 0 && !d.hasProtocol(spec.protocol) {
		closeFDs(m.FDs)
		return nil, fmt.Errorf("needs protocol feature %s, which was not negotiated", protocolNames[uint(spec.protocol)])
	}
	switch m.Request {
	case GetFeatures:
		return u64(d.offered), nil
	case SetFeatures:
		return nil, d.setFeatures(m.U64())
	case GetProtocolFeatures:
		return u64(d.protocolOffered()), nil
	case SetProtocolFeatures:
		v := m.U64()
		if v&^d.protocolOffered() != 0 {
			d.violate(m.Request, specProtocolFeatures, "acked protocol features %v, which were not offered", ProtocolFeatureNames(v&^d.protocolOffered()))
			return nil, fmt.Errorf("%#x: bits %v were not offered", v, ProtocolFeatureNames(v&^d.protocolOffered()))
		}
		d.protocol = v
		return nil, nil
	case SetOwner:
		return nil, nil
	case ResetOwner:
		// vhost-user.rst, RESET_OWNER: "Deprecated. This is no longer
		// used. Used to be sent to request disabling all rings, but some
		// back-ends interpreted it to also discard connection state (this
		// interpretation would lead to bugs). It is recommended that
		// back-ends either ignore this message, or use it to disable all
		// rings." So: every ring is disabled and taken from the data
		// path; memory, features, fds and the connection stay, and
		// SET_VRING_ENABLE (or, without PROTOCOL_FEATURES, SET_VRING_KICK)
		// brings a ring back.
		for i := range d.rings {
			d.rings[i].enabled = false
		}
		return nil, d.update()
	case GetQueueNum:
		return u64(uint64(d.pairs)), nil
	case SetStatus:
		return nil, d.setStatus(m.U64())
	case GetStatus:
		return u64(d.net.status), nil
	case ResetDevice:
		return nil, d.resetDevice()
	case SendRARP:
		return nil, d.sendRARP(m.U64())
	case NetSetMTU:
		return nil, d.setMTU(m.U64())
	case GetConfig:
		return d.getConfig(m)
	case SetConfig:
		return nil, d.setConfig(m)
	case GetMaxMemSlots:
		return u64(guestmem.MaxRegions), nil
	case SetMemTable:
		return nil, d.setMemTable(m)
	case SetLogBase:
		return d.setLogBase(m)
	case SetLogFD:
		d.setLogFD(m)
		return nil, nil
	case AddMemReg:
		return nil, d.addMemReg(m)
	case RemMemReg:
		closeFDs(m.FDs)
		return nil, d.remMemReg(m.decodeMemReg())
	case SetVringNum:
		s := m.vringState()
		r, err := d.ring(s.Index)
		if err != nil {
			return nil, err
		}
		if err := r.stoppedFor("size"); err != nil {
			return nil, fmt.Errorf("ring %d: %w", s.Index, err)
		}
		// Size 0 marks a queue the driver does not use (virtio 1.2,
		// 4.1.4.3: queue_size 0 means unavailable); DPDK's virtio PMD
		// announces its unused queue pairs so. Such a ring never starts.
		// A packed ring may have any size up to 2^15 (virtio 1.2, 2.8:
		// "Queue Size ... need not be a power of 2"), a split one only a
		// power of two.
		if d.packed() {
			if s.Num > virtqueue.MaxPackedSize {
				return nil, fmt.Errorf("ring %d: size %d is over the packed ring maximum %d", s.Index, s.Num, virtqueue.MaxPackedSize)
			}
		} else if s.Num > virtqueue.MaxSize || s.Num&(s.Num-1) != 0 {
			return nil, fmt.Errorf("ring %d: size %d is not 0 or a power of two up to %d", s.Index, s.Num, virtqueue.MaxSize)
		}
		r.num = uint16(s.Num)
		r.brokenBy = nil
		return nil, nil
	case SetVringBase:
		s := m.vringState()
		r, err := d.ring(s.Index)
		if err != nil {
			return nil, err
		}
		if err := r.stoppedFor("base"); err != nil {
			return nil, fmt.Errorf("ring %d: %w", s.Index, err)
		}
		// A packed ring's base is its positions and wrap counters
		// (virtqueue.PackedBase, checked against the size when the
		// ring starts); a split ring's an index.
		if s.Num > 0xffff && !d.packed() {
			return nil, fmt.Errorf("ring %d: base %d does not fit 16 bits", s.Index, s.Num)
		}
		r.base = s.Num
		return nil, nil
	case SetVringAddr:
		a := m.vringAddr()
		r, err := d.ring(a.Index)
		if err != nil {
			return nil, err
		}
		if err := a.Validate(); err != nil {
			return nil, fmt.Errorf("ring %d: %w", a.Index, err)
		}
		if a.Flags&^1 != 0 {
			d.violate(m.Request, specVringAddrFlags, "ring %d: undefined flags %#x", a.Index, a.Flags&^1)
		}
		r.addr, r.addrSet, r.brokenBy = a, true, nil
		return nil, d.update()
	case GetVringBase:
		s := m.vringState()
		r, err := d.ring(s.Index)
		if err != nil {
			return nil, err
		}
		wasStarted := r.started
		r.started = false
		if err := d.update(); err != nil {
			return nil, err
		}
		closeFD(&r.kick)
		if wasStarted && !d.anyStarted() {
			d.stopped()
		}
		var b [8]byte
		binary.LittleEndian.PutUint32(b[0:], s.Index)
		binary.LittleEndian.PutUint32(b[4:], r.base)
		return b[:], nil
	case SetVringKick, SetVringCall, SetVringErr:
		return nil, d.setVringFD(m)
	case GetInflightFD:
		reply, fd, err := d.getInflightFD(m)
		d.replyFD = fd
		return reply, err
	case SetInflightFD:
		return nil, d.setInflightFD(m)
	case SetVringEnable:
		s := m.vringState()
		r, err := d.ring(s.Index)
		if err != nil {
			return nil, err
		}
		if s.Num > 1 {
			return nil, fmt.Errorf("ring %d: state %d, want 0 or 1", s.Index, s.Num)
		}
		r.enabled = s.Num == 1
		return nil, d.update()
	}
	return nil, fmt.Errorf("unsupported %v", m.Request)
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, v)
	return b
}

func (d *device) ring(index uint32) (*ring, error) {
	if index >= uint32(len(d.rings)) {
		return nil, fmt.Errorf("ring index %d out of range (this port has %d rings)", index, len(d.rings))
	}
	return &d.rings[index], nil
}

// stoppedFor refuses a change of a started ring's size or base.
//
// vhost-user.rst, "Ring states": "While a ring is stopped, the back-end
// must not process the ring at all", and the back-end must "stop a ring
// upon receiving VHOST_USER_GET_VRING_BASE". SET_VRING_NUM and
// SET_VRING_BASE are the vhost ioctls VHOST_SET_VRING_NUM/BASE, which
// Linux refuses with EBUSY while a ring runs; QEMU and DPDK's virtio-user
// send them only between GET_VRING_BASE and SET_VRING_KICK. On a started
// ring the new size would not match the rings the driver laid out, and a
// new base would be overwritten by the data path's own index at the next
// stop, so vhostd refuses rather than accept a value it cannot honour.
//
// A refusal, not a protocol error: the ring, the device and the connection
// are left as they were, and a frontend that asked for a REPLY_ACK gets a
// NACK (as Linux answers the ioctl with EBUSY), so the frontend can stop
// the ring and try again.
func (r *ring) stoppedFor(what string) error {
	if r.started {
		return &refusal{fmt.Errorf("started: its %s can change only after GET_VRING_BASE stopped it", what)}
	}
	return nil
}

// refusal is an error from a request that vhostd declines without
// changing any state: it is NACKed and logged, and the connection stays.
// Every other error from a request ends the connection.
type refusal struct{ err error }

func (r *refusal) Error() string { return r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

func (d *device) setFeatures(v uint64) error {
	if v&^d.offered != 0 {
		d.violate(SetFeatures, specSetFeatures, "acked %v, which were not offered", FeatureNames(v&^d.offered))
		return fmt.Errorf("%#x: %v were not offered", v, FeatureNames(v&^d.offered))
	}
	d.features, d.featuresSet = v, true
	// Without PROTOCOL_FEATURES, rings are enabled as soon as they start
	// (vhost-user.rst, "Ring states").
	if v&(1<<FeatureProtocolFeature) == 0 {
		for i := range d.rings {
			d.rings[i].enabled = true
		}
	}
	return d.update()
}

func (d *device) setVringFD(m *Message) error {
	v := m.U64()
	idx := uint32(v & vringIdxMask)
	r, err := d.ring(idx)
	if err != nil {
		closeFDs(m.FDs)
		return err
	}
	if v&^uint64(vringIdxMask|vringNoFD) != 0 {
		d.violate(m.Request, specVringFD, "ring %d: reserved bits set in %#x", idx, v)
		closeFDs(m.FDs)
		return fmt.Errorf("ring %d: unknown bits in %#x", idx, v)
	}
	fd := -1
	if len(m.FDs) == 1 {
		fd = m.FDs[0]
		// Checked before any poller can see it: the data path blocks in
		// epoll on kick fds and writes call fds from its poller threads.
		if err := checkEventfd(fd); err != nil {
			closeFDs(m.FDs)
			return fmt.Errorf("ring %d: %w", idx, err)
		}
	}
	if m.Request == SetVringErr {
		// vhostd reports no ring errors; keep the fd so the frontend's
		// view stays consistent, and release it with the ring.
		closeFD(&r.errFD)
		r.errFD = fd
		return nil
	}
	// Swap fds only while the data path holds no rings: it may be
	// blocked on the old kick fd or about to write the old call fd.
	d.stop()
	if m.Request == SetVringKick {
		if !d.featuresSet {
			// Tolerated, as rte_vhost does (DPDK 22.11's virtio_user
			// does this when VERSION_1 is not offered), but the header
			// layout is then a guess: see the report.
			d.violate(m.Request, specNoSetFeatures, "ring %d started before any SET_FEATURES: features 0 assumed (10-byte header)", idx)
		}
		closeFD(&r.kick)
		d.kickGen++
		r.kick, r.started, r.brokenBy, r.kickGen = fd, true, nil, d.kickGen
		if d.features&(1<<FeatureProtocolFeature) == 0 {
			r.enabled = true
		}
	} else {
		closeFD(&r.call)
		r.call = fd
	}
	return d.start()
}

func (d *device) setMemTable(m *Message) error {
	specs, err := m.decodeMemTable()
	if err != nil {
		closeFDs(m.FDs)
		return err
	}
	// Map the whole new table before touching the old one: if mapping
	// fails, the old table stays in use.
	mem, err := guestmem.Map(specs, m.FDs)
	closeFDs(m.FDs)
	if err != nil {
		return err
	}
	d.memDups = nil
	return d.replaceMemory(mem, func(old *guestmem.Memory) { old.Unmap() })
}

func (d *device) addMemReg(m *Message) error {
	spec := m.decodeMemReg()
	if d.mem != nil && slices.Contains(d.mem.Regions(), spec) {
		// The same region again (QEMU < 8.1 with several queue pairs,
		// see memDups): already mapped, nothing changes. Keeping the
		// first mapping is safe whatever the new fd is: the region's
		// addresses are the same and its memory the frontend's own.
		closeFDs(m.FDs)
		if d.memDups == nil {
			d.memDups = map[guestmem.RegionSpec]int{}
		}
		d.memDups[dupKey(spec)]++
		d.log.WithField("region", spec.String()).Debug("ADD_MEM_REG of a region already mapped: counted, not mapped again")
		return nil
	}
	var mem *guestmem.Memory
	var err error
	if d.mem == nil {
		mem, err = guestmem.Map([]guestmem.RegionSpec{spec}, m.FDs)
	} else {
		mem, err = d.mem.Add(spec, m.FDs[0])
	}
	closeFDs(m.FDs)
	if err != nil {
		return fmt.Errorf("region %v: %w", spec, err)
	}
	return d.replaceMemory(mem, func(old *guestmem.Memory) { old.Detach() })
}

// dupKey is the key of a region in memDups: what REM_MEM_REG matches a
// region by (Memory.Remove), its mmap offset left out.
func dupKey(s guestmem.RegionSpec) guestmem.RegionSpec {
	s.MmapOffset = 0
	return s
}

func (d *device) remMemReg(spec guestmem.RegionSpec) error {
	if d.mem == nil {
		return fmt.Errorf("region %v: no memory table", spec)
	}
	if n := d.memDups[dupKey(spec)]; n > 0 {
		// One of several ADD_MEM_REGs of it undone (memDups): it stays.
		if n == 1 {
			delete(d.memDups, dupKey(spec))
		} else {
			d.memDups[dupKey(spec)] = n - 1
		}
		return nil
	}
	kept, removed, err := d.mem.Remove(spec)
	if err != nil {
		return err
	}
	// vhost-user.rst, REM_MEM_REG: the payload describes "a region of
	// guest memory which the back-end device must unmap". So the region
	// goes even if a ring lies in it: replaceMemory takes every ring from
	// the data path before anything is unmapped, and start leaves a ring
	// whose parts no longer translate out, marked broken (vhostctl shows
	// why), so it is never used after the unmap. The frontend brings it
	// back by pointing it at mapped memory (SET_VRING_ADDR). The request
	// itself succeeded: the connection and the other rings stay.
	if err := d.replaceMemory(kept, func(old *guestmem.Memory) {
		old.Detach()
		removed.Unmap()
	}); err != nil {
		d.log.WithError(err).WithField("region", spec.String()).Warn("REM_MEM_REG unmapped memory holding a ring; the ring is stopped until SET_VRING_ADDR points it at mapped memory")
	}
	return nil
}

// replaceMemory makes mem the device's memory, restarting the running rings
// over it, then releases the old table with done once the data path has
// let go of it.
func (d *device) replaceMemory(mem *guestmem.Memory, done func(old *guestmem.Memory)) error {
	d.stop()
	old := d.mem
	d.mem = mem
	err := d.start()
	if old != nil {
		done(old)
	}
	return err
}

// stop takes the rings away from the data path and saves their indices.
func (d *device) stop() {
	if d.running == nil {
		return
	}
	d.backend.Publish(nil)
	for i := range d.rings {
		r := &d.rings[i]
		switch {
		case r.q != nil:
			r.base = uint32(r.q.ResumeIndex())
			if err := r.q.Err(); err != nil && r.brokenBy == nil {
				r.brokenBy = err
			}
		case r.pq != nil:
			r.base = r.pq.RingBase()
			if err := r.pq.Err(); err != nil && r.brokenBy == nil {
				r.brokenBy = err
			}
		default:
			continue
		}
		d.ringViol[i].addQueue(r.running())
		r.q, r.pq = nil, nil
	}
	d.running = nil
}

// start hands the data path every ring that is ready to run.
func (d *device) start() error {
	// A frontend that never sends SET_FEATURES runs with none negotiated
	// (legacy layout), so only memory is required.
	if d.mem == nil {
		return nil
	}
	rs := &Rings{Mem: d.mem, HdrLen: 10, MrgRxbuf: d.features&(1<<FeatureNetMrgRxbuf) != 0}
	if d.features&(1<<FeatureVersion1) != 0 || rs.MrgRxbuf {
		rs.HdrLen = 12
	}
	rs.MTU = d.net.mtu
	rs.Features = d.features
	var firstErr error
	for i := range d.rings {
		r := &d.rings[i]
		if !r.started || !r.enabled || !r.addrSet || r.num == 0 || r.brokenBy != nil {
			continue
		}
		var err error
		if d.packed() {
			err = d.startPacked(i, r)
		} else {
			err = d.startSplit(i, r)
		}
		if err != nil {
			r.q, r.pq = nil, nil
			err = fmt.Errorf("ring %d: %w", i, err)
			r.brokenBy = err
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		ring := r.running()
		ring.Index, ring.Kick, ring.Call = i, r.kick, r.call
		if i%2 == 0 {
			rs.RX = append(rs.RX, ring)
		} else {
			rs.TX = append(rs.TX, ring)
		}
	}
	if len(rs.RX)+len(rs.TX) == 0 {
		return firstErr
	}
	d.running = rs
	d.backend.Publish(rs)
	return firstErr
}

// packed reports whether the frontend acked VIRTIO_F_RING_PACKED: every
// ring of the device then has the packed layout (virtio 1.2, 2.8).
func (d *device) packed() bool { return d.features&(1<<FeatureRingPacked) != 0 }

// running returns ring r's running queue as the data path sees it (Index,
// Queue or Packed set), or nil.
func (r *ring) running() *Ring {
	switch {
	case r.q != nil:
		return &Ring{Index: -1, Queue: r.q, Kick: -1, Call: -1}
	case r.pq != nil:
		return &Ring{Index: -1, Packed: r.pq, Kick: -1, Call: -1}
	}
	return nil
}

// startSplit builds ring i's split queue from r.
func (d *device) startSplit(i int, r *ring) error {
	cfg, err := d.queueConfig(i, r)
	if err != nil {
		return err
	}
	if r.base > 0xffff {
		return fmt.Errorf("base %#x does not fit a split ring's 16-bit index", r.base)
	}
	if r.q, err = virtqueue.New(d.mem, cfg, uint16(r.base)); err != nil {
		return err
	}
	// A ring tracked in an inflight region resumes where the region
	// says; any other at the used index (resume.go).
	if d.inflight == nil || i%2 == 0 {
		d.resumeAtUsed(i, r)
	}
	if err := d.attachInflight(i, r); err != nil {
		return err
	}
	d.logRing(r, cfg)
	return nil
}

// startPacked builds ring i's packed queue from r.
func (d *device) startPacked(i int, r *ring) error {
	if d.inflight != nil {
		return errInflightPacked
	}
	cfg, err := d.packedConfig(r)
	if err != nil {
		return err
	}
	if r.pq, err = virtqueue.NewPacked(d.mem, cfg, d.packedResumeBase(i, r.base)); err != nil {
		return err
	}
	d.logPacked(r)
	return nil
}

// queueConfig is the configuration of ring i, r.
func (d *device) queueConfig(i int, r *ring) (virtqueue.Config, error) {
	cfg := virtqueue.Config{
		// Even rings are the driver's receive queues, odd ones its
		// transmit queues (virtio 1.2, 5.1.2).
		Dir:      virtqueue.DeviceReads,
		Size:     r.num,
		EventIdx: d.features&(1<<FeatureEventIdx) != 0,
		Indirect: d.features&(1<<FeatureIndirectDesc) != 0,
	}
	if i%2 == 0 {
		cfg.Dir = virtqueue.DeviceWrites
	}
	var err error
	if cfg.Desc, err = d.mem.UserToGuest(r.addr.Desc, uint64(r.num)*16); err != nil {
		return cfg, fmt.Errorf("descriptor table at %#x: %w", r.addr.Desc, err)
	}
	if cfg.Avail, err = d.mem.UserToGuest(r.addr.Avail, 6+2*uint64(r.num)); err != nil {
		return cfg, fmt.Errorf("available ring at %#x: %w", r.addr.Avail, err)
	}
	if cfg.Used, err = d.mem.UserToGuest(r.addr.Used, 6+8*uint64(r.num)); err != nil {
		return cfg, fmt.Errorf("used ring at %#x: %w", r.addr.Used, err)
	}
	return cfg, nil
}

// packedConfig is the configuration of packed ring r. With RING_PACKED,
// SET_VRING_ADDR's three addresses are the descriptor ring, the driver
// area and the device area (vhost-user.rst, "Ring addresses"; virtio
// 1.2, 2.8: "Descriptor Ring", "Driver Event Suppression", "Device Event
// Suppression"), each translated whole or refused.
func (d *device) packedConfig(r *ring) (virtqueue.PackedConfig, error) {
	cfg := virtqueue.PackedConfig{
		Size:     r.num,
		EventIdx: d.features&(1<<FeatureEventIdx) != 0,
		Indirect: d.features&(1<<FeatureIndirectDesc) != 0,
	}
	var err error
	if cfg.Desc, err = d.mem.UserToGuest(r.addr.Desc, uint64(r.num)*16); err != nil {
		return cfg, fmt.Errorf("packed descriptor ring at %#x: %w", r.addr.Desc, err)
	}
	if cfg.Driver, err = d.mem.UserToGuest(r.addr.Avail, 4); err != nil {
		return cfg, fmt.Errorf("driver event suppression area at %#x: %w", r.addr.Avail, err)
	}
	if cfg.Device, err = d.mem.UserToGuest(r.addr.Used, 4); err != nil {
		return cfg, fmt.Errorf("device event suppression area at %#x: %w", r.addr.Used, err)
	}
	return cfg, nil
}

// update re-publishes the rings after a state change.
func (d *device) update() error {
	d.stop()
	return d.start()
}

// reset returns the device to its state after connect, keeping nothing.
func (d *device) reset() {
	d.forgetRings()
	d.mem.Unmap()
	d.mem = nil
	d.memDups = nil
	d.inflight.unmap()
	d.inflight = nil
	d.unmapLog()
	d.features, d.featuresSet, d.protocol = 0, false, 0
}

// forgetRings stops the data path and returns every ring to its state
// after connect, closing its fds.
func (d *device) forgetRings() {
	d.stop()
	for i := range d.rings {
		r := &d.rings[i]
		closeFD(&r.kick)
		closeFD(&r.call)
		closeFD(&r.errFD)
		d.rings[i] = ring{kick: -1, call: -1, errFD: -1}
	}
}

// anyStarted reports whether the frontend has a ring started.
func (d *device) anyStarted() bool {
	for i := range d.rings {
		if d.rings[i].started {
			return true
		}
	}
	return false
}

// stopped tells the backend, if it wants to know, that the frontend has
// stopped the device (Stopper).
func (d *device) stopped() {
	b := d.backend
	if g, ok := b.(*connGuard); ok {
		b = g.Backend
	}
	if st, ok := b.(Stopper); ok {
		st.Stopped()
	}
}

func closeFD(fd *int) {
	unixClose(*fd)
	*fd = -1
}
