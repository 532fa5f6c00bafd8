package virtqueue_test

import (
	"testing"

	"github.com/vhostd/vhostd/virtqueue"
	"github.com/vhostd/vhostd/virtqueue/guestmem"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// The cycle benchmarks measure the device side of one chain, as the data
// path runs it: per burst of 32 one Pending, per chain Pop and PushUsed,
// per burst Publish and NeedCall; the fake driver then makes the chains
// available again (Recycle, which allocates nothing and is counted in
// both). ns/op is per chain. Chains are single 64-byte readable buffers
// in a ring of 256.
const benchBurst = 32

func splitBench(b *testing.B) (*virtqueue.Queue, *virtqueuetest.Driver) {
	d := virtqueuetest.New(256, 1<<22, 0)
	q := newQueue(b, d, nil)
	for i := 0; i < 256; i++ {
		d.AddChain([]virtqueuetest.Buf{{Data: make([]byte, 64)}})
	}
	return q, d
}

func packedBench(b *testing.B) (*virtqueue.PackedQueue, *virtqueuetest.PackedDriver) {
	d := virtqueuetest.NewPacked(256, 1<<22, 0)
	q := newPacked(b, d, nil)
	for i := 0; i < 256; i++ {
		d.AddChain([]virtqueuetest.Buf{{Data: make([]byte, 64)}})
	}
	return q, d
}

func benchChain() *virtqueue.Chain {
	return &virtqueue.Chain{Segs: make([][]byte, 0, 8), GPAs: make([]uint64, 0, 8)}
}

func BenchmarkSplitCycle(b *testing.B) {
	q, d := splitBench(b)
	mem, c := d.Memory(), benchChain()
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; {
		k := min(q.Pending(), benchBurst, b.N-n)
		for i := 0; i < k; i++ {
			if err := q.Pop(mem, c); err != nil {
				b.Fatal(err)
			}
			q.PushUsed(c.Head, 0)
		}
		q.Publish()
		q.NeedCall()
		d.Recycle()
		n += k
	}
}

func BenchmarkPackedCycle(b *testing.B) {
	q, d := packedBench(b)
	mem, c := d.Memory(), benchChain()
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; {
		k := min(q.Pending(), benchBurst, b.N-n)
		for i := 0; i < k; i++ {
			if err := q.Pop(mem, c); err != nil {
				b.Fatal(err)
			}
			q.PushUsed(c.Head, 0)
		}
		q.Publish()
		q.NeedCall()
		d.Recycle()
		n += k
	}
}

// burstGeneric is a burst loop written once over the Ring constraint and
// calling its methods directly: the compiler calls them through the
// instantiation's dictionary (see Ring).
//
//go:noinline
func burstGeneric[R virtqueue.Ring](q R, mem *guestmem.Memory, c *virtqueue.Chain, limit int) int {
	k := min(q.Pending(), limit)
	for i := 0; i < k; i++ {
		if err := q.Pop(mem, c); err != nil {
			return i
		}
		q.PushUsed(c.Head, 0)
	}
	q.Publish()
	q.NeedCall()
	return k
}

// The helpers of the type-switch way: each case is a direct, inlinable
// call.
func ringPending[R virtqueue.Ring](r R) int {
	switch q := any(r).(type) {
	case *virtqueue.Queue:
		return q.Pending()
	case *virtqueue.PackedQueue:
		return q.Pending()
	}
	return 0
}

func ringPop[R virtqueue.Ring](r R, mem *guestmem.Memory, c *virtqueue.Chain) error {
	switch q := any(r).(type) {
	case *virtqueue.Queue:
		return q.Pop(mem, c)
	case *virtqueue.PackedQueue:
		return q.Pop(mem, c)
	}
	return nil
}

func ringPushUsed[R virtqueue.Ring](r R, head uint16, n uint32) {
	switch q := any(r).(type) {
	case *virtqueue.Queue:
		q.PushUsed(head, n)
	case *virtqueue.PackedQueue:
		q.PushUsed(head, n)
	}
}

func ringPublish[R virtqueue.Ring](r R) {
	switch q := any(r).(type) {
	case *virtqueue.Queue:
		q.Publish()
	case *virtqueue.PackedQueue:
		q.Publish()
	}
}

func ringNeedCall[R virtqueue.Ring](r R) bool {
	switch q := any(r).(type) {
	case *virtqueue.Queue:
		return q.NeedCall()
	case *virtqueue.PackedQueue:
		return q.NeedCall()
	}
	return false
}

// burstSwitch is burstGeneric through the type-switch helpers.
//
//go:noinline
func burstSwitch[R virtqueue.Ring](q R, mem *guestmem.Memory, c *virtqueue.Chain, limit int) int {
	k := min(ringPending(q), limit)
	for i := 0; i < k; i++ {
		if err := ringPop(q, mem, c); err != nil {
			return i
		}
		ringPushUsed(q, c.Head, 0)
	}
	ringPublish(q)
	ringNeedCall(q)
	return k
}

// BenchmarkRingDispatch compares the ways a burst loop written once can
// call either layout: the cycle above through a generic function calling
// the constraint's methods (dictionary calls), and through type-switch
// helpers. Compare with BenchmarkSplitCycle and BenchmarkPackedCycle,
// the same loop on the concrete types.
func BenchmarkRingDispatch(b *testing.B) {
	run := func(b *testing.B, burst func(limit int) int, recycle func() int) {
		b.ReportAllocs()
		for n := 0; n < b.N; {
			k := burst(min(benchBurst, b.N-n))
			if k == 0 {
				b.Fatal("no chain")
			}
			recycle()
			n += k
		}
	}
	b.Run("split/generic", func(b *testing.B) {
		q, d := splitBench(b)
		mem, c := d.Memory(), benchChain()
		run(b, func(l int) int { return burstGeneric(q, mem, c, l) }, d.Recycle)
	})
	b.Run("split/typeswitch", func(b *testing.B) {
		q, d := splitBench(b)
		mem, c := d.Memory(), benchChain()
		run(b, func(l int) int { return burstSwitch(q, mem, c, l) }, d.Recycle)
	})
	b.Run("packed/generic", func(b *testing.B) {
		q, d := packedBench(b)
		mem, c := d.Memory(), benchChain()
		run(b, func(l int) int { return burstGeneric(q, mem, c, l) }, d.Recycle)
	})
	b.Run("packed/typeswitch", func(b *testing.B) {
		q, d := packedBench(b)
		mem, c := d.Memory(), benchChain()
		run(b, func(l int) int { return burstSwitch(q, mem, c, l) }, d.Recycle)
	})
}
