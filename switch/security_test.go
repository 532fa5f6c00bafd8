package vswitch_test

import (
	"testing"
	"time"

	vswitch "github.com/vhostd/vhostd/switch"
	"github.com/vhostd/vhostd/switch/switchtest"
)

// newSecuredSwitch is newSwitch with a policy per port.
func newSecuredSwitch(t *testing.T, names []string, secs []vswitch.PortSecurity) (*vswitch.Switch, []*switchtest.ChanPort) {
	t.Helper()
	s, err := vswitch.New(vswitch.Config{}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	var ports []*switchtest.ChanPort
	for i, n := range names {
		p := switchtest.NewChanPort(n, 64)
		if _, err := s.AddSecuredPort(p, secs[i]); err != nil {
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

// waitStats waits until ok accepts the stats of port i.
func waitStats(t *testing.T, s *vswitch.Switch, i int, ok func(vswitch.Snapshot) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := s.Ports()[i].Counters
		if ok(st) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("port %d stats %+v", i, st)
		}
		time.Sleep(time.Millisecond)
	}
}

func fdbPort(s *vswitch.Switch, mac string) (port string, static bool) {
	for _, e := range s.FDB() {
		if e.MAC == mac {
			return e.Port, e.Static
		}
	}
	return "", false
}

// TestSpoofedFramesDropped: port a is pinned to macA. Frames it sends from
// another address are dropped and counted, and frames from macA sent by
// other ports (unpinned ones) are forwarded but do not move macA.
func TestSpoofedFramesDropped(t *testing.T) {
	s, p := newSecuredSwitch(t, []string{"a", "b", "c"}, []vswitch.PortSecurity{
		{Mode: vswitch.FixedMAC, MAC: vswitch.MAC(0x52540000000a)}, {}, {},
	})
	a, b, c := p[0], p[1], p[2]
	if port, static := fdbPort(s, "52:54:00:00:00:0a"); port != "a" || !static {
		t.Fatalf("pinned address in the FDB: port %q static %v", port, static)
	}

	// a claims to be b: dropped before learning or forwarding.
	a.Inject(frame(bcast, macB, "spoofed"))
	a.Inject(frame(macC, macB, "spoofed unicast"))
	waitStats(t, s, 0, func(st vswitch.Snapshot) bool { return st.Drops["rx_spoofed"] == 2 })
	expectNothing(t, b)
	expectNothing(t, c)
	if port, _ := fdbPort(s, "52:54:00:00:00:0b"); port != "" {
		t.Fatalf("spoofed source learned on %q", port)
	}

	// a's own address passes.
	ok := frame(bcast, macA, "from a")
	a.Inject(ok)
	expect(t, b, ok)
	expect(t, c, ok)

	// b claims to be a: forwarded (b is not pinned), but a stays a's.
	fake := frame(macC, macA, "b pretends to be a")
	b.Inject(fake)
	expect(t, c, fake) // c unknown: flooded
	expect(t, a, fake)
	waitStats(t, s, 1, func(st vswitch.Snapshot) bool { return st.FDBMovesRefused == 1 })
	if port, static := fdbPort(s, "52:54:00:00:00:0a"); port != "a" || !static {
		t.Fatalf("pinned address moved to %q (static %v)", port, static)
	}
	toA := frame(macA, macC, "to a")
	c.Inject(toA)
	expect(t, a, toA)
	expectNothing(t, b)

	pi := s.Ports()[0]
	if pi.Security.Mode != vswitch.FixedMAC || pi.LockedMAC != 0x52540000000a {
		t.Fatalf("port info %+v", pi)
	}
}

func TestSecuredPortRejectsBadPolicy(t *testing.T) {
	s, err := vswitch.New(vswitch.Config{}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pa, pb, pc := switchtest.NewChanPort("a", 1), switchtest.NewChanPort("b", 1), switchtest.NewChanPort("c", 1)
	defer pa.Close()
	defer pb.Close()
	defer pc.Close()
	if _, err := s.AddSecuredPort(pa, vswitch.PortSecurity{Mode: vswitch.FixedMAC, MAC: 0x02000000000a}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddSecuredPort(pb, vswitch.PortSecurity{Mode: vswitch.FixedMAC, MAC: 0x02000000000a}); err == nil {
		t.Fatal("two ports pinned to one address")
	}
	if _, err := s.AddSecuredPort(pb, vswitch.PortSecurity{Mode: vswitch.FixedMAC, MAC: 0x01005e000001}); err == nil {
		t.Fatal("multicast address accepted as a port's")
	}
	// The refused port left nothing behind: its name and index are free.
	if i, err := s.AddPort(pb); err != nil || i != 1 {
		t.Fatalf("add after refusals: %d, %v", i, err)
	}
	s.RemovePort(0)
	if i, err := s.AddSecuredPort(pc, vswitch.PortSecurity{Mode: vswitch.FixedMAC, MAC: 0x02000000000a}); err != nil || i != 0 {
		t.Fatalf("address not free after its port was removed: %d, %v", i, err)
	}
}

// TestLearnLimitForwardsAndCounts: a port at max_macs still has its frames
// forwarded, but their addresses are not learned, and each is counted.
func TestLearnLimitForwardsAndCounts(t *testing.T) {
	s, p := newSecuredSwitch(t, []string{"a", "b"}, []vswitch.PortSecurity{{MaxMACs: 2}, {}})
	a, b := p[0], p[1]
	for i := byte(1); i <= 5; i++ {
		f := frame(bcast, []byte{2, 0, 0, 0, 0, i}, "x")
		a.Inject(f)
		expect(t, b, f)
	}
	waitStats(t, s, 0, func(st vswitch.Snapshot) bool { return st.FDBLearnLimited == 3 })
	if pi := s.Ports()[0]; pi.LearnedMACs != 2 {
		t.Fatalf("port holds %d addresses, want 2", pi.LearnedMACs)
	}
}
