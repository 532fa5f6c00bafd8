package vswitch

import (
	"fmt"
	"sync"
	"testing"

	"github.com/vhostd/vhostd/switch/flowhash"
	"github.com/vhostd/vhostd/vhost"
	"github.com/vhostd/vhostd/virtqueue"
	"github.com/vhostd/vhostd/virtqueue/guestmem"
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
	return newMQEndSized(t, s, name, base, pairs, rxRun, txRun, 256, 2<<20)
}

// newMQEndSized is newMQEnd with rings of size entries and memSize bytes of
// guest memory per queue, all in one region.
func newMQEndSized(t *testing.T, s *Switch, name string, base uint64, pairs, rxRun, txRun int, size uint16, memSize int) *mqEnd {
	t.Helper()
	e := &mqEnd{port: NewVMPort(name, pairs, quietLog())}
	ram := make([]byte, (rxRun+txRun)*memSize)
	off := 0
	queue := func() *virtqueuetest.Driver {
		d := virtqueuetest.NewOn(ram[off:off+memSize], size, base+uint64(off))
		off += memSize
		return d
	}
	for i := 0; i < max(rxRun, txRun); i++ {
		if i < rxRun {
			e.rx = append(e.rx, queue())
		}
		if i < txRun {
			e.tx = append(e.tx, queue())
		}
	}
	mem, err := guestmem.FromBytes([]guestmem.RegionSpec{{GuestPhysAddr: base, Size: uint64(len(ram)), UserAddr: 0x7f0000000000 + base}}, [][]byte{ram})
	if err != nil {
		t.Fatal(err)
	}
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
		p.calls.flush()
	}
	return n
}

// TestLanesSpreadQueuesOverPollers checks the ownership of a multi-queue
// VM port's traffic: one lane per poller (up to the queue pairs), lane k
// taking the transmit queues of pairs k, k+n, ..., and frames delivered
// into the receive queue their flow hashes to, of those the guest runs.
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
	// c's two frames to a are one flow (same addresses): they meet in
	// the receive queue of a their hash picks, whichever poller
	// forwarded them.
	var want [2]int
	want[flowhash.Queue(flowhash.Bytes(ethFrame(0xb, 0xc, 60)), 2)] = 2
	if got := [2]int{count(a.rx[0]), count(a.rx[1])}; got != want {
		t.Errorf("a's receive queues got %v frames, want %v (one flow, one queue)", got, want)
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

// udpFrame is an IPv4/UDP frame from MAC src to MAC dst, from port sport
// to 5201, size bytes long, its payload seq.
func udpFrame(dst, src byte, sport uint16, seq byte, size int) []byte {
	f := make([]byte, size)
	copy(f, []byte{0x52, 0x54, 0, 0, 0, dst, 0x52, 0x54, 0, 0, 0, src, 0x08, 0x00})
	ip := f[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	copy(ip[12:], []byte{10, 0, 0, src, 10, 0, 0, dst})
	ip[20], ip[21], ip[22], ip[23] = byte(sport>>8), byte(sport), 0x14, 0x51
	f[size-1] = seq
	return f
}

// TestFlowHashSpreadsReceiveQueues sends flows from one single-queue
// guest to a guest with 4 receive queues and reports how they spread: every
// queue gets flows, none more than twice its share, each flow's frames all
// land in one queue in the order sent, whatever poller forwards them.
func TestFlowHashSpreadsReceiveQueues(t *testing.T) {
	for _, pollers := range []int{1, 2} {
		t.Run(fmt.Sprintf("pollers=%d", pollers), func(t *testing.T) {
			s, err := New(Config{Pollers: pollers}, quietLog())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(s.Close)
			const flows, perFlow, queues = 64, 3, 4
			a := newMQEnd(t, s, "a", 0, queues, queues, 1)
			b := newMQEnd(t, s, "b", 0x100000000, 1, 1, 1)
			for _, d := range a.rx {
				for range flows * perFlow {
					d.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 2048}})
				}
			}
			// a announces itself so b's frames are not flooded.
			a.tx[0].AddChain([]virtqueuetest.Buf{{Data: append(make([]byte, 12), ethFrame(0xb, 0xa, 60)...)}})
			for i := range b.rx {
				b.rx[i].AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 2048}})
			}
			forwardAll(s)
			for seq := range perFlow {
				for f := range flows {
					b.tx[0].AddChain([]virtqueuetest.Buf{{Data: append(make([]byte, 12), udpFrame(0xa, 0xb, uint16(40000+f), byte(seq), 80)...)}})
				}
				for forwardAll(s) > 0 {
				}
			}
			perQueue := make([]int, queues)
			flowQueue := map[uint16]int{}
			for q, d := range a.rx {
				last := map[uint16]int{}
				for _, u := range d.CollectUsed() {
					got := d.Read(d.DescAddr(u.ID), int(u.Len))[12:]
					sport := uint16(got[34])<<8 | uint16(got[35])
					seq := int(got[len(got)-1])
					if prev, ok := flowQueue[sport]; ok && prev != q {
						t.Errorf("flow %d in queues %d and %d", sport, prev, q)
					}
					flowQueue[sport] = q
					if n, ok := last[sport]; ok && seq != n+1 {
						t.Errorf("flow %d: frame %d after %d in queue %d", sport, seq, n, q)
					}
					last[sport] = seq
					perQueue[q]++
				}
			}
			t.Logf("%d flows of %d frames over %d receive queues: %v frames per queue", flows, perFlow, queues, perQueue)
			if len(flowQueue) != flows {
				t.Errorf("%d flows arrived, want %d", len(flowQueue), flows)
			}
			for q, n := range perQueue {
				if n == 0 || n > 2*flows*perFlow/queues {
					t.Errorf("queue %d got %d frames of %d (share %d)", q, n, flows*perFlow, flows*perFlow/queues)
				}
			}

			// Hashing and sorting bursts by queue allocates nothing
			// (the frames and buffers are prepared first: the mock
			// driver allocates). Each of a's receive queues still has
			// more buffers posted than the frames sent here.
			b.tx[0].CollectUsed()
			for i := range (allocRuns + 1) * BurstSize {
				b.tx[0].AddChain([]virtqueuetest.Buf{{Data: append(make([]byte, 12), udpFrame(0xa, 0xb, uint16(i), 0, 80)...)}})
			}
			allocs := testing.AllocsPerRun(allocRuns, func() {
				if n := forwardAll(s); n != BurstSize {
					t.Fatalf("forwarded %d frames, want a burst", n)
				}
			})
			if allocs != 0 {
				t.Errorf("forwarding to a multi-queue guest allocates %.2f times per burst", allocs)
			}
		})
	}
}

// TestQueueStatsListsUsedQueues: a port has transmit state for every
// queue pair it may run, but lists only the receive queues running or
// that carried something.
func TestQueueStatsListsUsedQueues(t *testing.T) {
	s, err := New(Config{}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	a := newMQEnd(t, s, "a", 0, 8, 2, 1)
	var dirs []string
	for _, q := range a.port.QueueStats() {
		dirs = append(dirs, fmt.Sprintf("%s%d", q.Dir, q.Queue))
	}
	if got := fmt.Sprint(dirs); got != "[rx0 tx0 tx1]" {
		t.Errorf("queues listed %s, want [rx0 tx0 tx1] (one lane, two receive queues running of 8)", got)
	}
}

// TestLanesManyQueues: with more than 64 transmit rings and a lane count
// that does not divide 64, each lane publishes the used entries of its
// own rings only (a lane once marked its rings in one 64-bit word, so
// ring 64's entries were published by the lane of ring 0, another
// poller's thread, before that ring's own lane had finished with them),
// and a guest that breaks two of a lane's rings whose numbers are 16
// apart has each break logged and counted once.
func TestLanesManyQueues(t *testing.T) {
	s, err := New(Config{Pollers: 3}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	const pairs = 70
	a := newMQEndSized(t, s, "a", 0, pairs, 1, pairs, 16, virtqueuetest.BufBase+64<<10)
	if len(a.port.lanes) != 3 {
		t.Fatalf("%d lanes, want 3", len(a.port.lanes))
	}
	frame := ethFrame(0xff, 0xa, 60)
	send := func(pair int) {
		a.tx[pair].AddChain([]virtqueuetest.Buf{{Data: append(make([]byte, 12), frame...)}})
	}
	// Pair 64 belongs to lane 1 (64 mod 3), pair 0 to lane 0.
	send(0)
	send(64)
	var b0, b1 Burst
	l0, l1 := a.port.lanes[0], a.port.lanes[1]
	if n := l1.Receive(&b1); n != 1 {
		t.Fatalf("lane 1 received %d frames, want 1", n)
	}
	if n := l0.Receive(&b0); n != 1 {
		t.Fatalf("lane 0 received %d frames, want 1", n)
	}
	l0.Done(&b0)
	if got := a.tx[0].UsedIdx(); got != 1 {
		t.Fatalf("pair 0: used index %d after its lane's Done, want 1", got)
	}
	if got := a.tx[64].UsedIdx(); got != 0 {
		t.Fatalf("pair 64: used index %d after lane 0's Done, want 0 (lane 1 has not finished)", got)
	}
	l1.Done(&b1)
	if got := a.tx[64].UsedIdx(); got != 1 {
		t.Fatalf("pair 64: used index %d after its lane's Done, want 1", got)
	}

	// Lane 0 holds pairs 0, 3, ..., 48, ...: break pairs 0 and 48
	// (rings 1 and 97, the same modulo 16 and 32).
	a.tx[0].Publish(999)
	a.tx[48].Publish(999)
	for range 5 {
		n := l0.Receive(&b0)
		l0.Done(&b0)
		if n != 0 {
			t.Fatalf("lane 0 received %d frames from broken rings", n)
		}
	}
	if d := a.port.Stats().Drops["rx_queue_broken"]; d != 2 {
		t.Fatalf("rx_queue_broken %d after 5 passes over two broken rings, want 2", d)
	}
}
