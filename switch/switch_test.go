package vswitch_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	vswitch "github.com/vhostd/vhostd/switch"
	"github.com/vhostd/vhostd/switch/switchtest"
)

func testLog() *logrus.Entry {
	l := logrus.New()
	l.SetLevel(logrus.WarnLevel)
	return logrus.NewEntry(l)
}

var (
	macA  = []byte{0x52, 0x54, 0, 0, 0, 0xa}
	macB  = []byte{0x52, 0x54, 0, 0, 0, 0xb}
	macC  = []byte{0x52, 0x54, 0, 0, 0, 0xc}
	bcast = []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
)

func frame(dst, src []byte, payload string) []byte {
	f := append(append(append([]byte{}, dst...), src...), 0x08, 0x00)
	return append(f, payload...)
}

func newSwitch(t *testing.T, names ...string) (*vswitch.Switch, []*switchtest.ChanPort) {
	t.Helper()
	s, err := vswitch.New(vswitch.Config{}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	var ports []*switchtest.ChanPort
	for _, n := range names {
		p := switchtest.NewChanPort(n, 64)
		if _, err := s.AddPort(p); err != nil {
			t.Fatal(err)
		}
		ports = append(ports, p)
	}
	s.Start()
	t.Cleanup(func() {
		s.Close()
		for _, p := range ports {
			p.Close()
		}
	})
	return s, ports
}

func expect(t *testing.T, p *switchtest.ChanPort, want []byte) {
	t.Helper()
	select {
	case got := <-p.Out:
		if !bytes.Equal(got, want) {
			t.Fatalf("%s got %x, want %x", p.Name(), got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s received nothing", p.Name())
	}
}

func expectNothing(t *testing.T, p *switchtest.ChanPort) {
	t.Helper()
	select {
	case got := <-p.Out:
		t.Fatalf("%s got unexpected frame %x", p.Name(), got)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestLearnAndFlood(t *testing.T) {
	s, p := newSwitch(t, "a", "b", "c")
	a, b, c := p[0], p[1], p[2]

	f1 := frame(macB, macA, "unknown unicast")
	a.Inject(f1)
	expect(t, b, f1) // flooded
	expect(t, c, f1)
	expectNothing(t, a) // no hairpin

	f2 := frame(macA, macB, "reply to learned")
	b.Inject(f2)
	expect(t, a, f2)
	expectNothing(t, c)

	f3 := frame(macB, macA, "now known")
	a.Inject(f3)
	expect(t, b, f3)
	expectNothing(t, c)

	f4 := frame(bcast, macC, "broadcast")
	c.Inject(f4)
	expect(t, a, f4)
	expect(t, b, f4)
	expectNothing(t, c)

	fdb := s.FDB()
	want := map[string]string{"52:54:00:00:00:0a": "a", "52:54:00:00:00:0b": "b", "52:54:00:00:00:0c": "c"}
	if len(fdb) != len(want) {
		t.Fatalf("fdb = %+v", fdb)
	}
	for _, e := range fdb {
		if want[e.MAC] != e.Port {
			t.Fatalf("fdb entry %+v, want port %s", e, want[e.MAC])
		}
	}
}

func TestSamePortAndRuntDropsCounted(t *testing.T) {
	s, p := newSwitch(t, "a", "b")
	a, b := p[0], p[1]
	a.Inject(frame(bcast, macA, "learn a"))
	expect(t, b, frame(bcast, macA, "learn a"))
	a.Inject(frame(macA, macB, "to a from a's port"))
	a.Inject([]byte{1, 2, 3})
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := s.Ports()[0].Counters
		if st.Drops["same_port"] == 1 && st.Drops["rx_runt"] == 1 {
			if st.RxPackets != 2 {
				t.Fatalf("rx_packets %d, want 2", st.RxPackets)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("drops not counted: %+v", st)
		}
		time.Sleep(time.Millisecond)
	}
	expectNothing(t, a)
	expectNothing(t, b)
}

func TestMACMoves(t *testing.T) {
	s, p := newSwitch(t, "a", "b", "c")
	a, b, c := p[0], p[1], p[2]
	a.Inject(frame(bcast, macA, "a on port a"))
	expect(t, b, frame(bcast, macA, "a on port a"))
	expect(t, c, frame(bcast, macA, "a on port a"))
	c.Inject(frame(bcast, macA, "a moved to port c"))
	expect(t, a, frame(bcast, macA, "a moved to port c"))
	expect(t, b, frame(bcast, macA, "a moved to port c"))
	b.Inject(frame(macA, macB, "to a"))
	expect(t, c, frame(macA, macB, "to a"))
	expectNothing(t, a)
	_ = s
}

func TestRemovePortFlushesFDB(t *testing.T) {
	s, p := newSwitch(t, "a", "b")
	p[0].Inject(frame(bcast, macA, "x"))
	expect(t, p[1], frame(bcast, macA, "x"))
	s.RemovePort(0)
	for _, e := range s.FDB() {
		if e.MAC == "52:54:00:00:00:0a" {
			t.Fatalf("removed port's address still learned: %+v", e)
		}
	}
	if _, err := s.AddPort(switchtest.NewChanPort("b", 1)); err == nil {
		t.Fatal("duplicate port name accepted")
	}
}

func TestFDBAging(t *testing.T) {
	f := vswitch.NewFDB(64, 10*time.Second)
	m := vswitch.MAC(0x525400000001)
	f.Learn(m, 3, 0)
	if got := f.Lookup(m); got != 3 {
		t.Fatalf("lookup %d, want 3", got)
	}
	f.Learn(m, 3, int64(5*time.Second)) // refresh
	f.Age(int64(12 * time.Second))
	if got := f.Lookup(m); got != 3 {
		t.Fatalf("refreshed entry aged out early: %d", got)
	}
	f.Age(int64(16 * time.Second))
	if got := f.Lookup(m); got != -1 {
		t.Fatalf("entry not aged out: %d", got)
	}
}

func TestIdleSwitchSleeps(t *testing.T) {
	// A started switch with idle ports must block in epoll, not spin: its
	// CPU time over an idle interval stays far below the wall time.
	_, p := newSwitch(t, "a", "b")
	time.Sleep(20 * time.Millisecond)
	before := cpuTime(t)
	time.Sleep(300 * time.Millisecond)
	used := cpuTime(t) - before
	if used > 100*time.Millisecond {
		t.Fatalf("idle switch used %v of CPU in 300ms", used)
	}
	p[0].Inject(frame(bcast, macA, "after idle"))
	expect(t, p[1], frame(bcast, macA, "after idle"))
}

// idlePort is a ChanPort that cannot wake the poller: it must be polled.
type idlePort struct {
	*switchtest.ChanPort
	attached chan struct{}
}

func (p *idlePort) WaitFDs(dst []int) []int { return dst }
func (p *idlePort) IdlePoll() time.Duration { return 2 * time.Millisecond }
func (p *idlePort) AttachThread() error {
	select {
	case p.attached <- struct{}{}:
	default:
	}
	return nil
}

func TestPortWithoutWakeFDIsPolled(t *testing.T) {
	s, err := vswitch.New(vswitch.Config{}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	up := &idlePort{ChanPort: switchtest.NewChanPort("uplink", 8), attached: make(chan struct{}, 1)}
	vm := switchtest.NewChanPort("vm", 8)
	defer up.Close()
	defer vm.Close()
	s.AddPort(up)
	s.AddPort(vm)
	s.Start()
	select {
	case <-up.attached:
	case <-time.After(5 * time.Second):
		t.Fatal("poller thread never attached to the port")
	}
	time.Sleep(50 * time.Millisecond) // the poller is asleep now
	// Inject without a wake: the frame must still be picked up by polling
	// every 2ms, well before the poller's 1s safety-net wakeup.
	f := frame(bcast, macA, "polled")
	up.ChanPort.InjectQuiet(f)
	select {
	case got := <-vm.Out:
		if !bytes.Equal(got, f) {
			t.Fatalf("got %x", got)
		}
	case <-time.After(500 * time.Millisecond):
		t.Fatal("frame on a port without wake fds not polled within 500ms (IdlePoll is 2ms)")
	}
}
