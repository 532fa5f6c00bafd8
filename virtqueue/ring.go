package virtqueue

import "github.com/vhostd/vhostd/virtqueue/guestmem"

// Ring is the data-path method set the two layouts share: *Queue (split)
// and *PackedQueue (packed) both satisfy it, which the compiler checks
// below, so a burst loop is written once for both.
//
// The semantics match method by method, with these differences a caller
// must know:
//   - Pending: split returns the exact count of chains waiting; packed an
//     upper bound (descriptors waiting; a chain takes one or more). Both
//     let Pop return ErrEmpty before the count runs out, and callers
//     already handle that.
//   - PushUsed: a packed ring completes chains in the order they were
//     popped (its used descriptors are written in ring order, skipping the
//     slots each chain took), so head must be the oldest chain popped and
//     not pushed. Split accepts any order; vhostd pushes in order anyway.
//   - LastAvail/UsedIdx: both count chains taken and returned, so their
//     difference is the chains out, for both; only split's are also the
//     ring indices GET_VRING_BASE reports (packed: RingBase).
//   - Backlog: split in chains, packed in descriptor slots; each pair is
//     only meaningful against itself.
//   - SetLog, the constructors, ring bases and inflight tracking are
//     control path and differ by layout.
//
// What the switch needs to run packed rings (not wired yet):
//   - vhost.Ring must carry either layout: a *Queue and a *PackedQueue
//     field, one of them nil, chosen at SET_VRING_ADDR by whether
//     VIRTIO_F_RING_PACKED was acked (the addresses are desc, driver and
//     device areas; SET/GET_VRING_BASE go through NewPacked and
//     RingBase; SET_LOG_BASE calls PackedQueue.SetLog).
//   - Dispatch once per burst, never per frame. With Go's compiler
//     (checked on go1.26 with -gcflags=-S), a generic function stencils
//     one body per GC shape, and every pointer type has the same shape:
//     a burst loop func[R Ring](q R) calls q.Pop, q.PushUsed, ...
//     through its dictionary, an indirect call per method per frame that
//     is never inlined, the cost of an interface call. Two ways avoid it:
//     (a) the burst loop written against the type parameter but calling
//     the methods through small helpers that switch on the concrete type
//     (switch q := any(r).(type) { case *Queue: ...; case *PackedQueue:
//     ... }): the compiler inlines each case, and the switch is one
//     compare of a type word, perfectly predicted per ring; or (b) a
//     type switch per burst into two copies of the loop (the body in a
//     generic function plus go:generate, or by hand). BenchmarkRingDispatch
//     in this package measures the three ways on a full Pop+PushUsed+
//     Publish cycle.
//   - Receive and Transmit in switch/vmport.go use only methods of Ring,
//     plus LogWritten and Logging (also in Ring); syncTx's gap
//     (LastAvail-UsedIdx) is in chains for both.
type Ring interface {
	*Queue | *PackedQueue
	Size() uint16
	Pending() int
	Pop(mem *guestmem.Memory, c *Chain) error
	Unpop(n int)
	PushUsed(head uint16, length uint32)
	Publish()
	NeedCall() bool
	DisableNotify()
	EnableNotify() bool
	Err() error
	Broken() error
	Logging() bool
	LogWritten(c *Chain, n uint32)
	LastAvail() uint16
	UsedIdx() uint16
	Backlog() (avail, used uint16)
	RingContains(addr uintptr) bool
}

// Compile-time proof that both layouts have the Ring method set.
var (
	_ = ringSize[*Queue]
	_ = ringSize[*PackedQueue]
)

func ringSize[R Ring](r R) uint16 { return r.Size() }
