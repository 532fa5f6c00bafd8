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
// How the rest of vhostd runs packed rings (wired):
//   - vhost.Ring carries either layout: a *Queue and a *PackedQueue
//     field, exactly one set, chosen when the ring starts by whether
//     VIRTIO_F_RING_PACKED was acked (vhost/device.go: SET_VRING_ADDR's
//     addresses are then the desc, driver and device areas;
//     SET/GET_VRING_BASE go through NewPacked and RingBase; SET_LOG_BASE
//     calls PackedQueue.SetLog; inflight regions are refused). Its
//     methods choose per call, for what runs once per burst or less.
//   - Dispatch once per burst, never per frame. A burst loop written
//     as func[R Ring](q R, ...) calling q.Pop, q.PushUsed, ... is NOT
//     enough: checked on go1.26 with -gcflags=-S, each layout gets a body
//     of its own (the union gives shapes go.shape.*virtqueue.Queue and
//     go.shape.*virtqueue.PackedQueue), yet every call of a method of
//     the type parameter still goes through the instantiation's
//     dictionary (CALL through a register) and none is inlined: split's
//     PushUsed, inlined on the concrete type, becomes an indirect call
//     per frame, as through an interface. A helper per method that
//     switches on the concrete type (func ringPushUsed[R Ring](r R, ...)
//     { switch q := any(r).(type) { case *Queue: q.PushUsed(...); case
//     *PackedQueue: ... } }) compiles to two compares of a type word and
//     a direct call, and the small methods inline, but the helpers of the
//     big methods are calls of their own. Measured with bench_test.go
//     (min of 8 runs, ns per chain, the mock driver's ~4-6 ns included,
//     0 allocations in all): split concrete 10.1, generic 10.9, type
//     switch 12.0; packed concrete 15.2, generic 16.6, type switch 16.8.
//     So either written-once form costs about 1 ns per chain here, and
//     the type-switch helpers buy nothing over plain generic calls. For
//     no cost at all, dispatch once per burst (a type switch on the ring)
//     into two concrete copies of the loop: the body written once as a
//     template and generated for *Queue and *PackedQueue (go:generate).
//     That is what the switch does: switch/vmport.go's functions named
//     *Split are the template, switch/vmport_packed.go their generated
//     packed copies (switch/internal/ringgen, whose test fails on a
//     stale copy), and Receive and Transmit pick one per ring and burst.
//   - What switch/ calls on a queue today is all in Ring: Receive and
//     Transmit (vmport.go; Transmit's Unpop of the chains of a frame
//     that found no room, or of the chains it took ahead with PopBurst
//     and did not need, gives back the latest unpushed chains, which
//     packed supports), syncTx in fault.go (its gap LastAvail-UsedIdx
//     is in chains for both), MarkTx/Progress in drain.go (Backlog pairs
//     compared only with themselves, so their units do not matter) and
//     the fault owner's RingContains. A frame dropped for want of
//     buffers on a packed ring shows up as ErrEmpty from Pop where
//     Pending promised more, which Transmit already counts as
//     tx_no_buffers.
type Ring interface {
	*Queue | *PackedQueue
	Size() uint16
	Pending() int
	Pop(mem *guestmem.Memory, c *Chain) error
	PopBurst(mem *guestmem.Memory, cs []Chain) (int, error)
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
