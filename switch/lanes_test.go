package vswitch

import (
	"fmt"
	"sync"
	"testing"

	"github.com/vhostd/vhostd/vhost"
	"github.com/vhostd/vhostd/virtqueue"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// mqEnd is a fake multi-queue guest on a VMPort: a driver per running
// queue (rx[i], tx[i]: queue pair i).
type mqEnd struct {
	rx, tx []*virtqueuetest.Driver
	port   *VMPort
	idx    int
}

// newMQEnd attaches a guest with pairs queue pairs offered, of which the
// first rxRun receive and txRun transmit queues run, with its memory at
// guest-physical base.
func newMQEnd(t *testing.T, s *Switch, name string, base uint64, pairs, rxRun, txRun int) *mqEnd {
	t.Helper()
	e := &mqEnd{port: NewVMPort(name, pairs, quietLog())}
	var all []*virtqueuetest.Driver
	gpa := base
	for i := 0; i < max(rxRun, txRun); i++ {
		if i < rxRun {
			e.rx = append(e.rx, virtqueuetest.New(256, 2<<20, gpa))
			all, gpa = append(all, e.rx[i]), gpa+2<<20
		}
		if i < txRun {
			e.tx = append(e.tx, virtqueuetest.New(256, 2<<20, gpa))
			all, gpa = append(all, e.tx[i]), gpa+2<<20
		}
	}
	mem := virtqueuetest.JoinMemory(all...)
	r := &vhost.Rings{Mem: mem, HdrLen: 12}
	for i, d := range e.rx {
		q, err := virtqueue.New(mem, d.Config(), 0)
		if err != nil {
			t.Fatal(err)
		}
		r.RX = append(r.RX, &vhost.Ring{Index: 2 * i, Queue: q, Kick: -1, Call: -1})
	}
	for i, d := range e.tx {
		q, err := virtqueue.New(mem, d.Config(), 0)
		if err != nil {
			t.Fatal(err)
		}
		r.TX = append(r.TX, &vhost.Ring{Index: 2*i + 1, Queue: q, Kick: -1, Call: -1})
	}
	var err error
	if e.idx, err = s.AddPort(e.port); err != nil {
		t.Fatal(err)
	}
	e.port.Publish(r)
	return e
}

// forwardAll has each poller forward one burst from each receiver it owns,
// as the pollers would, one after the other.
func forwardAll(s *Switch) int {
	t := s.table.Load()
	n := 0
	for _, p := range s.pollers {
		for _, u := range *p.owned.Load() {
			n += p.forward(t, u.idx, u.r, s.now())
		}
	}
	return n
}

// TestLanesSpreadQueuesOverPollers checks the ownership of a multi-queue
// VM port's traffic: one lane per poller (up to the queue pairs), lane k
// taking the transmit queues of pairs k, k+n, ..., and poller k delivering
// into receive queue k, or into those there are when the guest runs fewer.
func TestLanesSpreadQueuesOverPollers(t *testing.T) {
	s, err := New(Config{Pollers: 2}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	a := newMQEnd(t, s, "a", 0, 4, 2, 4)           // 4 pairs: 2 receive, 4 transmit queues running
	b := newMQEnd(t, s, "b", 0x100000000, 1, 1, 1) // one pair: one lane
	c := newMQEnd(t, s, "c", 0x200000000, 2, 1, 2) // 2 pairs offered, the guest receives on one
	lanes := map[string][]int{}
	for _, pi := range s.Ports() {
		lanes[pi.Port.Name()] = pi.Pollers
	}
	// A port's first lane goes to the poller with the fewest ports, the
	// next to the following pollers: a on 0 then 1, b on 1, c on 0 then 1.
	if got := fmt.Sprint(lanes["a"], lanes["b"], lanes["c"]); got != "[0 1] [1] [0 1]" {
		t.Fatalf("receive lanes of a, b, c on pollers %s, want [0 1] [1] [0 1]", got)
	}
	for _, e := range []*mqEnd{a, b, c} {
		for _, d := range e.rx {
			for i := 0; i < 16; i++ {
				d.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 2048}})
			}
		}
	}
	// a sends one frame to c on each of its 4 transmit queues: pairs 0
	// and 2 belong to lane 0, 1 and 3 to lane 1.
	for i, d := range a.tx {
		d.AddChain([]virtqueuetest.Buf{{Data: append(make([]byte, 12), ethFrame(0xc, 0xa, 60+i)...)}})
	}
	// c learns its address on both of its transmit queues (to b).
	for _, d := range c.tx {
		d.AddChain([]virtqueuetest.Buf{{Data: append(make([]byte, 12), ethFrame(0xb, 0xc, 60)...)}})
	}
	// Round one, poller 0: a's lane 0 (pairs 0, 2) floods 2 frames to b
	// and c (c unknown yet); c's lane 0 (pair 0) floods 1 to a and b.
	// Poller 1: a's lane 1 (pairs 1, 3) sends 2 to c, now known; b's lane
	// has nothing; c's lane 1 (pair 1) floods 1 to a and b. Each poller
	// delivers into its own receive queue of a, and both into c's only
	// one.
	if n := forwardAll(s); n != 6 {
		t.Fatalf("forwarded %d frames, want 6", n)
	}
	if n := forwardAll(s); n != 0 {
		t.Fatalf("second round forwarded %d frames, want 0", n)
	}
	count := func(d *virtqueuetest.Driver) int { return len(d.CollectUsed()) }
	if got := [2]int{count(a.rx[0]), count(a.rx[1])}; got != [2]int{1, 1} {
		t.Errorf("a's receive queues got %v frames, want one each (one per poller)", got)
	}
	if got := count(c.rx[0]); got != 4 {
		t.Errorf("c's one receive queue got %d frames, want 4 (from both pollers)", got)
	}
	if got := count(b.rx[0]); got != 4 {
		t.Errorf("b got %d frames, want 4 (every flood)", got)
	}
	for i, d := range append(a.tx, c.tx...) {
		if u := d.CollectUsed(); len(u) != 1 {
			t.Errorf("transmit queue %d: %d chains used, want 1", i, len(u))
		}
	}
	sa, sc := a.port.Stats(), c.port.Stats()
	if sa.RxPackets != 4 || sa.TxPackets != 2 || sc.RxPackets != 2 || sc.TxPackets != 4 {
		t.Errorf("counters summed over lanes and queues: a %+v, c %+v", sa, sc)
	}
}

// TestSharedReceiveQueueTransmits has two pollers transmit at once into a
// guest running a single receive queue: they must take turns (the race
// detector sees it if not), and every frame must arrive.
func TestSharedReceiveQueueTransmits(t *testing.T) {
	s, err := New(Config{Pollers: 2}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	b := newMQEnd(t, s, "b", 0, 2, 1, 1)
	const rounds, per = 25, 4 // 200 frames: within the ring
	for i := 0; i < 2*rounds*per; i++ {
		b.rx[0].AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 2048}})
	}
	var wg sync.WaitGroup
	for q := 0; q < 2; q++ {
		wg.Add(1)
		go func(q int) {
			defer wg.Done()
			f := &Frame{Segs: [][]byte{ethFrame(0xb, byte(q), 60)}, Len: 60}
			fs := []*Frame{f, f, f, f}
			for i := 0; i < rounds; i++ {
				b.port.Transmit(q, fs)
			}
		}(q)
	}
	wg.Wait()
	if got := len(b.rx[0].CollectUsed()); got != 2*rounds*per {
		t.Fatalf("guest got %d frames, want %d", got, 2*rounds*per)
	}
	if st := b.port.Stats(); st.TxPackets != 2*rounds*per {
		t.Fatalf("tx_packets %d, want %d", st.TxPackets, 2*rounds*per)
	}
}

// TestFirstLanesSpreadOverPollers checks that ports whose guests run one
// queue pair (only their first lane has traffic) still spread over the
// pollers, as whole ports did before lanes, and that removing a port
// frees its poller for the next one.
func TestFirstLanesSpreadOverPollers(t *testing.T) {
	s, err := New(Config{Pollers: 3}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	add := func(name string, pairs int) int {
		idx, err := s.AddPort(NewVMPort(name, pairs, quietLog()))
		if err != nil {
			t.Fatal(err)
		}
		return idx
	}
	add("a", 8) // 3 lanes: one per poller
	b := add("b", 2)
	add("c", 1)
	got := func() string {
		var out []string
		for _, pi := range s.Ports() {
			out = append(out, fmt.Sprint(pi.Port.Name(), pi.Pollers))
		}
		return fmt.Sprint(out)
	}
	if g := got(); g != "[a[0 1 2] b[1 2] c[2]]" {
		t.Fatalf("lanes on pollers %s, want first lanes on pollers 0, 1, 2", g)
	}
	s.RemovePort(b)
	add("d", 1)
	if g := got(); g != "[a[0 1 2] d[1] c[2]]" {
		t.Fatalf("after removing b: lanes on pollers %s, want d's on b's poller 1", g)
	}
}
