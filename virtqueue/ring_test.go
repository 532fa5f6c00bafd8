package virtqueue_test

import (
	"errors"
	"testing"

	"github.com/vhostd/vhostd/virtqueue"
	"github.com/vhostd/vhostd/virtqueue/guestmem"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// echoBurst is a receive burst written once for both layouts, as the
// switch's will be: it takes up to len(cs) chains, gives back the last
// one if asked, answers each other with the bytes it read (copied into
// the chain's writable part), and publishes.
func echoBurst[R virtqueue.Ring](q R, mem *guestmem.Memory, cs []*virtqueue.Chain, giveBack bool) (int, error) {
	n := 0
	for pending := ringPending(q); pending > 0 && n < len(cs); pending-- {
		err := ringPop(q, mem, cs[n])
		if errors.Is(err, virtqueue.ErrEmpty) {
			break
		}
		if err != nil {
			return n, err
		}
		n++
	}
	if giveBack && n > 0 {
		q.Unpop(1)
		n--
	}
	for _, c := range cs[:n] {
		w := 0
		for _, s := range c.Segs[c.NRead:] {
			w += copy(s, joined(c, 0, c.NRead)[w:])
		}
		ringPushUsed(q, c.Head, uint32(w))
		if q.Logging() {
			q.LogWritten(c, uint32(w))
		}
	}
	ringPublish(q)
	ringNeedCall(q)
	return n, nil
}

// TestRingBothLayouts runs the same burst code over a split and a packed
// queue fed the same chains, and checks both drivers get the same
// answers back.
func TestRingBothLayouts(t *testing.T) {
	sd := virtqueuetest.New(16, 1<<22, 0)
	sq := newQueue(t, sd, nil)
	pd := virtqueuetest.NewPacked(16, 1<<22, 0)
	pq := newPacked(t, pd, nil)
	cs := []*virtqueue.Chain{chain(8), chain(8), chain(8), chain(8), chain(8), chain(8), chain(8), chain(8)}
	for round := 0; round < 10; round++ {
		var sent []string
		for i := 0; i < 5; i++ {
			msg := string(rune('a'+round)) + string(rune('0'+i))
			bufs := []virtqueuetest.Buf{{Data: []byte(msg)}, {Write: true, WriteLen: 1}, {Write: true, WriteLen: 8}}
			sd.AddChain(bufs)
			pd.AddChain(bufs)
			sent = append(sent, msg)
		}
		for _, giveBack := range []bool{true, false} {
			ns, err := echoBurst(sq, sd.Memory(), cs, giveBack)
			if err != nil {
				t.Fatal(err)
			}
			np, err := echoBurst(pq, pd.Memory(), cs, giveBack)
			if err != nil {
				t.Fatal(err)
			}
			if ns != np {
				t.Fatalf("round %d: split took %d chains, packed %d", round, ns, np)
			}
		}
		su, pu := sd.CollectUsed(), pd.CollectUsed()
		if len(su) != 5 || len(pu) != 5 {
			t.Fatalf("round %d: %d split and %d packed chains back, want 5", round, len(su), len(pu))
		}
		for i := range su {
			if su[i].Len != 2 || pu[i].Len != 2 {
				t.Fatalf("round %d chain %d: lengths %d and %d, want 2", round, i, su[i].Len, pu[i].Len)
			}
		}
		if sq.LastAvail()-sq.UsedIdx() != 0 || pq.LastAvail()-pq.UsedIdx() != 0 {
			t.Fatal("chains left out")
		}
	}
}
