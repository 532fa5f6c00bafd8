// Package vswitch is a MAC-learning Ethernet switch between ports: VM ports
// backed by vhost-user rings, and (elsewhere) a DPDK uplink. Poller
// goroutines move frames in bursts from each port's receive side through
// the forwarding database to the other ports' transmit sides, copying each
// frame once, straight from the source buffers into the destination's.
package vswitch

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/vhostd/vhostd/switch/offload"
	"github.com/vhostd/vhostd/virtqueue/bulkcopy"
	"github.com/vhostd/vhostd/virtqueue/release"
)

// BurstSize is the most frames moved per receive call. 64, not the 32
// DPDK and OVS use: each burst walks chains of cross-core misses (the
// rings' indices, entries and descriptors, for the sender and for each
// receiver) whose latency does not grow with the burst, so a longer one
// spreads it over more frames. Measured in one vhostd alternating 32 and
// 64 every 20 ms (64 B VM-to-VM, docs/bench.md): 4% fewer cycles per
// frame and 4% more frames with 64.
const BurstSize = 64

// MaxSegs is the most buffer segments one received frame may span.
const MaxSegs = 64

// Frame is one received Ethernet frame, scattered over segments that stay
// valid until the port's Done is called for the burst holding it.
type Frame struct {
	Segs [][]byte // the frame's bytes, in order, without any virtio header
	Len  int      // total bytes in Segs
	// Offload is what the sender left for the receiver or the switch to
	// do (a partial checksum, segmentation), validated: zero for a
	// complete frame, which is all a port other than a VM port sends. A
	// Receiver sets it for every frame it returns.
	Offload offload.Meta
}

// Burst is a poller's scratch for one receive call: the frames and the
// segment storage they point into. A poller owns its Burst; ports fill it.
type Burst struct {
	Frames [BurstSize]Frame
	N      int // frames received
	pool   [BurstSize * MaxSegs][]byte
	// calls is the poller's batch of call decisions (callbatch.go), or
	// nil outside a poller: decided at once.
	calls *callBatch
}

// SegPool returns the empty segment storage for frame i: a slice of length
// zero and capacity MaxSegs for the port to append segments to.
func (b *Burst) SegPool(i int) [][]byte {
	return b.pool[i*MaxSegs : i*MaxSegs : (i+1)*MaxSegs]
}

// Control is what a port may ask of the switch it is attached to.
type Control interface {
	// Changed tells the pollers that the port's wait fds or data-path state
	// changed. It returns once no poller uses the port's previous state.
	Changed()
	// Pollers returns how many pollers there are: with more than one,
	// calls of the port's Transmit may run at once.
	Pollers() int
	// Disconnected tells the switch that the port's peer went away (a
	// VM port's frontend): a LearnMAC port forgets the address it locked
	// to, so that the next peer may use another.
	Disconnected()
	// MaySend reports whether the port's address policy lets it send
	// from src now (inject.go).
	MaySend(src MAC) bool
	// Wake wakes the pollers of the port's receivers without waiting:
	// the port has input of its own for them (inject.go).
	Wake()
}

// Receiver is the receive side of a port, or one lane of it: what one
// poller owns. Its methods are called only by that poller.
type Receiver interface {
	// Receive fills b.Frames[:n] with up to BurstSize frames and returns n.
	// The frames stay valid until Done(b).
	Receive(b *Burst) int
	// Done releases the frames of the last Receive into b.
	Done(b *Burst)
	// WaitFDs appends the fds that become readable when Receive has work.
	// When one wakes the poller, the poller drains it with an 8-byte read
	// (they are eventfds: kick fds), unless the receiver marks it as one
	// that must not be read (NoDrainer).
	WaitFDs(dst []int) []int
	// Arm asks to be woken through WaitFDs when new frames arrive, and
	// reports whether frames are already waiting (then the poller must not
	// sleep).
	Arm() bool
	// Counters returns the counters of the receive side, which only the
	// owning poller writes (with no locked instruction).
	Counters() *Counters
}

// Port is one switch port. Its receive side is the port itself, which must
// then be a Receiver too, or, for a LanedPort, its lanes.
type Port interface {
	// Name identifies the port in logs, stats and the FDB.
	Name() string
	// Attach is called once, by the switch, before any other method.
	Attach(c Control)
	// Transmit copies the frames into the port, counting every frame it
	// cannot deliver as a drop with its reason. Any poller may call it;
	// q is the caller's poller number, which a port with several queues
	// uses to pick the queue, so that pollers do not contend for one.
	Transmit(q int, frames []*Frame)
	// Stats returns the port's counters, its receivers' included.
	Stats() Snapshot
}

// LanedPort is a port with several receive lanes, each owned by one
// poller: a VM with several queue pairs, whose traffic is to spread over
// the pollers as the guest spreads it over its queues.
type LanedPort interface {
	Port
	// Receivers returns the lanes. Called once, after Attach.
	Receivers() []Receiver
}

// receivers returns the receive lanes of p.
func receivers(p Port) ([]Receiver, error) {
	if l, ok := p.(LanedPort); ok {
		return l.Receivers(), nil
	}
	if r, ok := p.(Receiver); ok {
		return []Receiver{r}, nil
	}
	return nil, fmt.Errorf("port %q can not receive: it is neither a Receiver nor a LanedPort", p.Name())
}

// IdlePoller is implemented by ports that cannot wake a sleeping poller
// through WaitFDs (a DPDK ethdev without rx interrupts): while idle, the
// poller then sleeps at most IdlePoll between looks at the port.
type IdlePoller interface {
	IdlePoll() time.Duration
}

// NoDrainer is implemented by ports with wait fds that are not eventfds
// and must not be read: a DPDK rx interrupt fd is net_tap's tap queue
// itself (a read would take a frame) or, for net_vhost, an epoll fd around
// the frontend's kick eventfd, which nobody drains, so that it stays
// readable once kicked. The poller never reads such an fd and watches it
// edge-triggered, as DPDK's own rx interrupt code does: it wakes once per
// event, not for as long as the fd stays readable. An edge is lost only if
// it came before the fd joined the wait set (epoll looks at the fd when it
// is added) or before the port asked for it: Arm must cover that, by
// reporting pending work or by polling itself.
type NoDrainer interface {
	// NoDrain reports whether fd, one of the port's WaitFDs, must not be
	// read.
	NoDrain(fd int) bool
}

// ThreadAttacher is implemented by ports whose Receive or Transmit must run
// on threads registered with a runtime of their own (DPDK's lcores). Each
// poller calls AttachThread on its locked OS thread before it first calls
// the port, and again after any port change (it must be idempotent).
type ThreadAttacher interface {
	AttachThread() error
}

// Drop reasons, as they appear in stats.
const (
	DropRxRunt      = iota // frame shorter than an Ethernet header (or its virtio header)
	DropRxSegments         // frame in more buffer segments than MaxSegs
	DropRxBroken           // the port's receive queue broke (counted per break)
	DropSamePort           // unicast destined to the port it came from
	DropTxNotReady         // port has no running queue to deliver into
	DropTxNoBuffers        // destination had no free buffers
	DropTxTooBig           // frame larger than the destination's buffer
	DropTxBroken           // destination queue broke (counted per frame lost)
	DropTxFull             // the uplink device's transmit queue took no more
	DropTxNoMbufs          // the uplink's mbuf pool was empty
	DropRxSpoofed          // source address not the one the port is pinned to
	DropGuestFault         // in a burst a guest memory fault cut short (counted on the port that faulted)
	DropMTUExceeded        // frame longer than the VM port's MTU allows, either way (mtu.go)
	// DropTxOffload: an offloaded frame the destination cannot take and
	// software cannot complete (UFO to a receiver without GUEST_UFO).
	DropTxOffload
	// DropInternalError: a bug of vhostd's cut the port's burst short
	// (internal.go); counted on the port whose burst it was.
	DropInternalError
	// DropRxOffload is the first of the drops of frames whose virtio-net
	// header the guest filled in wrongly (or asked for an offload it did
	// not negotiate): one reason per offload.Reason but ReasonOK, in its
	// order, named rx_offload_<reason>.
	DropRxOffload
	NumDropReasons = DropRxOffload + offload.NumReasons - 1
)

// dropOffload returns the drop reason of an offload.Reason other than OK.
func dropOffload(r offload.Reason) int { return DropRxOffload + int(r) - 1 }

// DropNames maps drop reasons to their names in stats.
var DropNames = dropNames()

func dropNames() [NumDropReasons]string {
	n := [NumDropReasons]string{
		"rx_runt", "rx_too_many_segments", "rx_queue_broken", "same_port",
		"tx_not_ready", "tx_no_buffers", "tx_too_big", "tx_queue_broken",
		"tx_uplink_full", "tx_no_mbufs", "rx_spoofed", "guest_memory_fault",
		"mtu_exceeded", "tx_offload_unsupported", "internal_error",
	}
	for r := offload.ReasonOK + 1; int(r) < offload.NumReasons; r++ {
		n[dropOffload(r)] = "rx_offload_" + r.String()
	}
	return n
}

// Counter is one statistic: read at any time by anyone, written once per
// burst by the data path.
type Counter struct{ v uint64 }

// Load returns the counter's value.
func (c *Counter) Load() uint64 { return atomic.LoadUint64(&c.v) }

// Add adds n; any number of writers may add at once.
func (c *Counter) Add(n uint64) { atomic.AddUint64(&c.v, n) }

// addOwned adds n for a writer that is the only one at the time: the
// poller that owns the receiver, or the holder of the transmit queue the
// counters belong to. It takes no locked instruction: an atomic add is a full
// fence on amd64, which stalls the poller until every store of the burst
// to guest memory has left the CPU.
func (c *Counter) addOwned(n uint64) { release.Store64(&c.v, c.v+n) }

// Counters are a port's statistics. "rx" is what the switch received from
// the port (the guest transmitted); "tx" is what the switch delivered to it.
// Writers add once per burst, never per frame.
type Counters struct {
	RxPackets Counter
	RxBytes   Counter
	TxPackets Counter
	TxBytes   Counter
	Drops     [NumDropReasons]Counter
	// Frames whose source address was not learned; they were still
	// forwarded. See LearnResult.
	FDBMovesRefused Counter // the address is pinned to another port
	FDBLearnLimited Counter // the port holds its limit of addresses
	FDBFull         Counter // the address's bucket had no entry the port may evict
	// Offloads done for frames delivered to the port (vmoffload.go).
	GSOPassed     Counter // GSO super-frames delivered whole (the receiver took the offload)
	GSOSegmented  Counter // GSO super-frames segmented in software
	GSOSegments   Counter // the frames those were cut into
	CsumCompleted Counter // partial checksums completed in software
	// GSOChanged counts GSO super-frames whose headers no longer held
	// what was validated once copied into the port's buffers (the
	// sender rewrote them meanwhile): delivered without the GSO request.
	GSOChanged Counter
	// InternalErrors counts the bugs of vhostd's the port's bursts met
	// on the data path (internal.go): its connection was dropped each time.
	InternalErrors Counter
}

// Snapshot is a copy of Counters for reporting.
type Snapshot struct {
	RxPackets uint64            `json:"rx_packets"`
	RxBytes   uint64            `json:"rx_bytes"`
	TxPackets uint64            `json:"tx_packets"`
	TxBytes   uint64            `json:"tx_bytes"`
	Drops     map[string]uint64 `json:"drops"`
	// Received frames whose source address the FDB did not take (they
	// were forwarded all the same): pinned to another port, over the
	// port's max_macs, or no room in the table.
	FDBMovesRefused uint64 `json:"fdb_moves_refused"`
	FDBLearnLimited uint64 `json:"fdb_learn_limited"`
	FDBFull         uint64 `json:"fdb_full"`
	// Offloads done for frames delivered to the port: GSO super-frames
	// delivered whole, segmented in software (and the segments made), and
	// partial checksums completed in software.
	GSOPassed     uint64 `json:"gso_passed"`
	GSOSegmented  uint64 `json:"gso_segmented"`
	GSOSegments   uint64 `json:"gso_segments"`
	CsumCompleted uint64 `json:"csum_completed"`
	// GSO super-frames the sender changed after the switch validated
	// them, delivered without their GSO request.
	GSOChanged uint64 `json:"gso_changed"`
	// Bugs of vhostd's that the port's bursts met on the data path, each
	// of which dropped its connection (the log has the stack).
	InternalErrors uint64 `json:"internal_errors"`
}

// Snapshot copies the counters.
func (c *Counters) Snapshot() Snapshot { return SumCounters(c) }

// SumCounters adds up the counters of a port kept in several parts (one
// per writer, so that writers share no cache line).
func SumCounters(cs ...*Counters) Snapshot {
	s := Snapshot{Drops: make(map[string]uint64, NumDropReasons)}
	var drops [NumDropReasons]uint64
	for _, c := range cs {
		s.RxPackets += c.RxPackets.Load()
		s.RxBytes += c.RxBytes.Load()
		s.TxPackets += c.TxPackets.Load()
		s.TxBytes += c.TxBytes.Load()
		for i := range c.Drops {
			drops[i] += c.Drops[i].Load()
		}
		s.FDBMovesRefused += c.FDBMovesRefused.Load()
		s.FDBLearnLimited += c.FDBLearnLimited.Load()
		s.FDBFull += c.FDBFull.Load()
		s.GSOPassed += c.GSOPassed.Load()
		s.GSOSegmented += c.GSOSegmented.Load()
		s.GSOSegments += c.GSOSegments.Load()
		s.CsumCompleted += c.CsumCompleted.Load()
		s.GSOChanged += c.GSOChanged.Load()
		s.InternalErrors += c.InternalErrors.Load()
	}
	for i, n := range drops {
		s.Drops[DropNames[i]] = n
	}
	return s
}

// copyFrame copies src's bytes into dst starting at offset off (which may
// cross segment boundaries) and returns how many bytes were copied.
func copyFrame(dst [][]byte, off int, src [][]byte) int {
	di := 0
	for di < len(dst) && off >= len(dst[di]) {
		off -= len(dst[di])
		di++
	}
	n := 0
	for _, s := range src {
		for len(s) > 0 && di < len(dst) {
			c := bulkcopy.Copy(dst[di][off:], s)
			n += c
			s = s[c:]
			off += c
			if off == len(dst[di]) {
				di++
				off = 0
			}
		}
	}
	return n
}

// Gather copies the first len(out) bytes of the frame in segs into out
// (fewer if the frame is shorter) and returns how many it copied.
func Gather(out []byte, segs [][]byte) int {
	n := 0
	for _, s := range segs {
		n += copy(out[n:], s)
		if n == len(out) {
			break
		}
	}
	return n
}
