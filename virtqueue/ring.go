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
//   - Dispatch once per burst, never per frame. A burst loop written
//     as func[R Ring](q R, ...) calling q.Pop, q.PushUsed, ... is NOT
//     enough: checked on go1.26 with -gcflags=-S, each layout gets a body
//     of its own (the union gives shapes go.shape.*virtqueue.Queue and
//     go.shape.*virtqueue.PackedQueue), yet every call of a method of
//     the type parameter still goes through the instantiation's
//     dictionary (CALL through a register) and none is inlined: split's
//     PushUsed, inlined on the concrete type, becomes an indirect call
//     per frame, as through an interface. What compiles to direct calls
//     is a helper per method that switches on the concrete type,
//     func ringPushUsed[R Ring](r R, h uint16, n uint32) { switch q :=
//     any(r).(type) { case *Queue: q.PushUsed(h, n); case *PackedQueue:
//     q.PushUsed(h, n) } }: two compares of a type word (predicted
//     perfectly for a ring), then a direct call, and the small methods
//     (both PushUsed) inline. bench_test.go has both forms
//     (burstGeneric, burstSwitch) and BenchmarkRingDispatch; on this
//     shared 2-core machine their difference stayed inside the noise
//     (about 15 to 18 ns per chain, mock driver included, for either),
//     so the choice rests on the code generated. The alternative, a
//     type switch per burst into two hand-written or generated copies
//     of the loop, costs nothing per call but duplicates the loop.
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
