//go:build cgo

package uplink

import (
	"bytes"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	vswitch "github.com/vhostd/vhostd/switch"
	"github.com/vhostd/vhostd/switch/dpdk"
	"github.com/vhostd/vhostd/switch/switchtest"
)

var ringSeq atomic.Int32

// openRing opens an uplink on a fresh net_ring device, whose transmit ring
// is its receive ring: what the port transmits, it receives back.
func openRing(t testing.TB, cfg Config) *Port {
	t.Helper()
	cfg.Devargs = fmt.Sprintf("net_ring%d", ringSeq.Add(1))
	return openUplink(t, cfg)
}

func ethFrame(n int, seed byte) []byte {
	f := make([]byte, n)
	copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, seed})
	for i := 14; i < n; i++ {
		f[i] = seed + byte(i)
	}
	return f
}

// split hands a frame over in uneven pieces, as guest buffers come.
func split(f []byte) *vswitch.Frame {
	a, b := min(len(f), 10), min(len(f), 700)
	return &vswitch.Frame{Segs: [][]byte{f[:a], f[a:b], f[b:]}, Len: len(f)}
}

func TestTransmitReceiveLoopback(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p := openRing(t, Config{MTU: 9000})
	if err := p.AttachThread(); err != nil {
		t.Fatal(err)
	}
	if err := p.AttachThread(); err != nil || dpdk.LcoreID() < 0 {
		t.Fatalf("AttachThread twice: %v, lcore %d", err, dpdk.LcoreID())
	}
	sizes := []int{14, 60, 1514, 4000, 9018}
	var frames []*vswitch.Frame
	var want [][]byte
	var total uint64 // net_ring counts no bytes: compare with the port's own
	for i, n := range sizes {
		f := ethFrame(n, byte(i))
		want = append(want, f)
		frames = append(frames, split(f))
		total += uint64(n)
	}
	p.Transmit(0, frames)
	c := p.Stats()
	if c.TxPackets != uint64(len(sizes)) || c.TxBytes != total {
		t.Fatalf("tx counters %+v, want %d frames %d bytes", c, len(sizes), total)
	}
	var b vswitch.Burst
	n := p.Receive(&b)
	if n != len(sizes) || b.N != n {
		t.Fatalf("received %d of %d", n, len(sizes))
	}
	for i := 0; i < n; i++ {
		f := b.Frames[i]
		if len(f.Segs) != 1 {
			t.Errorf("frame %d in %d segments: a jumbo mbuf should hold it whole", i, len(f.Segs))
		}
		if got := bytes.Join(f.Segs, nil); f.Len != sizes[i] || !bytes.Equal(got, want[i]) {
			t.Errorf("frame %d: len %d, bytes equal %v", i, f.Len, bytes.Equal(got, want[i]))
		}
	}
	p.Done(&b)
	if n := p.Receive(&b); n != 0 {
		t.Fatalf("received %d more", n)
	}
	p.Done(&b)
	st, xs, err := p.DeviceStats()
	if err != nil || st.TxPackets != uint64(len(sizes)) || st.RxPackets != uint64(len(sizes)) {
		t.Errorf("DeviceStats = %+v, %v", st, err)
	}
	if len(xs) == 0 {
		t.Errorf("no xstats")
	}
	s := p.Status()
	if !s.Link.Up || s.Driver != "net_ring" || s.MTU != 9000 || s.MAC == "" || !strings.HasPrefix(s.Device, "net_ring") {
		t.Errorf("Status = %+v", s)
	}
}

func TestTransmitDropsCounted(t *testing.T) {
	p := openRing(t, Config{MTU: 1500})
	// Larger than MTU + header + VLAN tag.
	p.Transmit(0, []*vswitch.Frame{split(ethFrame(1519, 1)), split(ethFrame(1518, 2))})
	c := p.Stats()
	if c.Drops["tx_too_big"] != 1 || c.TxPackets != 1 {
		t.Fatalf("counters %+v: want one tx_too_big, one sent", c)
	}
	// net_ring's ring holds 1023 frames and nobody receives: the rest
	// must be refused, freed, and counted.
	f := split(ethFrame(64, 3))
	burst := make([]*vswitch.Frame, vswitch.BurstSize)
	for i := range burst {
		burst[i] = f
	}
	for i := 0; i < 40; i++ {
		p.Transmit(0, burst)
	}
	c = p.Stats()
	if c.Drops["tx_uplink_full"] == 0 || c.TxPackets+c.Drops["tx_uplink_full"] != 1+40*vswitch.BurstSize {
		t.Fatalf("counters %+v after overfilling the ring", c)
	}
	var b vswitch.Burst
	for p.Receive(&b) > 0 {
		p.Done(&b)
	}
	p.Done(&b)
	if free, want := p.pool.Available(), p.pool.Size()-p.tx.Stashed(); free < want-512 {
		// The ring's receive side may hold mbufs of its own; beyond that
		// every refused frame must be back.
		t.Errorf("pool has %d free, want about %d: refused frames leaked", free, want)
	}
}

func TestMTUValidation(t *testing.T) {
	for _, mtu := range []int{MinMTU - 1, MaxMTU + 1} {
		if _, err := Open(testEAL, Config{Devargs: "net_null99", MTU: mtu}, testLog); err == nil || !strings.Contains(err.Error(), "uplink MTU") {
			t.Errorf("MTU %d: %v", mtu, err)
		}
	}
	// net_af_packet says it receives 1518-byte frames: a jumbo MTU is
	// refused with what to do about it, and the device is released.
	_, err := Open(testEAL, Config{Devargs: "net_af_packet7,iface=lo", MTU: 9000}, testLog)
	if err == nil || !strings.Contains(err.Error(), "MTU 9000 is more than DPDK's net_af_packet supports") || !strings.Contains(err.Error(), "jumbo frames need a NIC") {
		t.Fatalf("jumbo MTU on net_af_packet: %v", err)
	}
	d, err := testEAL.Probe("net_af_packet7,iface=lo")
	if err != nil {
		t.Fatalf("probe again after the failure (was the device released?): %v", err)
	}
	d.Close()
}

func TestOpenUnknownDevice(t *testing.T) {
	_, err := Open(testEAL, Config{Devargs: "net_bogus0"}, testLog)
	if err == nil || !strings.Contains(err.Error(), "failed to parse device") {
		t.Fatalf("Open of an unknown device: %v", err)
	}
}

// TestDataPathAllocatesNothing checks that Transmit, Receive and Done
// allocate no Go memory.
func TestDataPathAllocatesNothing(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p := openRing(t, Config{})
	p.AttachThread()
	f := split(ethFrame(1000, 1))
	burst := make([]*vswitch.Frame, vswitch.BurstSize)
	for i := range burst {
		burst[i] = f
	}
	var b vswitch.Burst
	allocs := testing.AllocsPerRun(200, func() {
		p.Transmit(0, burst)
		if p.Receive(&b) != vswitch.BurstSize {
			t.Fatal("short receive")
		}
		p.Done(&b)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per burst", allocs)
	}
}

// TestInSwitch runs the uplink under a real switch poller: a frame from a
// VM port floods to the uplink, comes back from it (net_ring loops), and
// reaches the VM port again, though the uplink has no fd to wake the
// poller (it is polled every IdlePoll).
func TestInSwitch(t *testing.T) {
	s, err := vswitch.New(vswitch.Config{}, testLog)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	up := openRing(t, Config{})
	if m := up.Status().RxMode; m != RxPolling || len(up.WaitFDs(nil)) != 0 {
		t.Fatalf("net_ring uplink: RxMode %v, WaitFDs %v: net_ring has no rx interrupts", m, up.WaitFDs(nil))
	}
	vm := switchtest.NewChanPort("vm", 8)
	defer vm.Close()
	if _, err := s.AddPort(up); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddPort(vm); err != nil {
		t.Fatal(err)
	}
	s.Start()
	time.Sleep(20 * time.Millisecond) // let the poller go idle
	f := ethFrame(100, 7)
	start := time.Now()
	vm.Inject(f)
	select {
	case got := <-vm.Out:
		if !bytes.Equal(got, f) {
			t.Fatalf("got %x", got)
		}
		t.Logf("VM -> uplink -> VM in %v", time.Since(start))
	case <-time.After(2 * time.Second):
		t.Fatal("frame did not come back through the uplink")
	}
	s.Stop()
	c := up.Stats()
	if c.TxPackets != 1 || c.RxPackets != 1 {
		t.Fatalf("uplink counters %+v", c)
	}
}

func BenchmarkTransmitReceive(b *testing.B) {
	for _, size := range []int{64, 1514} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			p := openRing(b, Config{})
			p.AttachThread()
			f := split(ethFrame(size, 1))
			burst := make([]*vswitch.Frame, vswitch.BurstSize)
			for i := range burst {
				burst[i] = f
			}
			var bu vswitch.Burst
			b.SetBytes(int64(size * vswitch.BurstSize))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				p.Transmit(0, burst)
				p.Receive(&bu)
				p.Done(&bu)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*vswitch.BurstSize), "ns/frame")
		})
	}
}
