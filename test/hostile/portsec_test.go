package hostile

import (
	"bytes"
	"math/rand"
	"net"
	"testing"
	"time"

	"github.com/vhostd/vhostd/daemon/control"
	vt "github.com/vhostd/vhostd/vhost/vhosttest"
)

var (
	macA = [6]byte{0x02, 0, 0, 0, 0, 0x0a}
	macB = [6]byte{0x02, 0, 0, 0, 0, 0x0b}
)

func macString(m [6]byte) string { return net.HardwareAddr(m[:]).String() }

// fdbPort returns the port the FDB holds mac on ("" for none) and how
// many entries each port holds.
func fdbPort(es []control.FDBEntry, mac [6]byte) (string, map[string]int) {
	port, per := "", map[string]int{}
	for _, e := range es {
		per[e.Port]++
		if e.MAC == macString(mac) {
			port = e.Port
		}
	}
	return port, per
}

// sendAll transmits frames from g in batches the ring can hold, waiting
// for vhostd to consume each batch.
func sendAll(t *testing.T, g *vt.Guest, frames [][]byte) {
	t.Helper()
	const batch = 100 // two descriptors each: 200 of the ring's 256
	for i := 0; i < len(frames); i += batch {
		end := min(i+batch, len(frames))
		before := g.TX.Driver.UsedIdx()
		g.Send(frames[i:end]...)
		deadline := time.Now().Add(5 * time.Second)
		for int(g.TX.Driver.UsedIdx()-before) < end-i {
			if time.Now().After(deadline) {
				t.Errorf("vhostd consumed %d of %d frames (batch at %d) within 5s", g.TX.Driver.UsedIdx()-before, end-i, i)
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
}

// TestPortSecurity is case 6: ports a and b pinned to a MAC each, c
// unpinned with a limit of 100 learned MACs. a sending from b's MAC is
// dropped and counted (rx_spoofed); b's static FDB entry moves for no one;
// c's flood of 20,000 random source MACs leaves a's and b's entries in
// place, c holding at most its limit and counting fdb_learn_limited; and
// unicast to b from a legitimate source still reaches b.
func TestPortSecurity(t *testing.T) {
	v := startVhostd(t, []port{
		{Name: "a", Opts: ",mac=" + macString(macA), MAC: macA},
		{Name: "b", Opts: ",mac=" + macString(macB), MAC: macB},
		{Name: "c", Opts: ",max_macs=100"},
	})
	defer v.finish(t, "6", "a", "b")
	a := v.guest(t, "a", guestMem, stdFeatures, stdProtocol)
	b := v.guest(t, "b", guestMem, stdFeatures, stdProtocol)
	c := v.guest(t, "c", guestMem, stdFeatures, stdProtocol)
	b.PostRX(64, 2048)

	// a spoofs b's MAC.
	var spoofed [][]byte
	for i := 0; i < 10; i++ {
		spoofed = append(spoofed, vt.Frame(broadcast, macB, i, 64))
	}
	sendAll(t, a, spoofed)
	time.Sleep(200 * time.Millisecond)
	if n := v.stats(t)["a"].Drops["rx_spoofed"]; n < 10 {
		t.Errorf("port a sent 10 frames from b's MAC: stats drops[rx_spoofed] = %d, want 10 (drops %v)", n, v.stats(t)["a"].Drops)
	}
	for _, fr := range b.Received() {
		if bytes.Equal(fr[6:12], macB[:]) {
			t.Errorf("b received a frame a sent from b's own MAC")
			break
		}
	}
	if p, _ := fdbPort(v.fdb(t), macB); p != "b" {
		t.Errorf("after a spoofed b's MAC, the FDB has %s on %q, want b (static)", macString(macB), p)
	}

	// c (unpinned) sends from b's MAC: b's static entry stays.
	sendAll(t, c, [][]byte{vt.Frame(broadcast, macB, 0, 64)})
	time.Sleep(100 * time.Millisecond)
	if p, _ := fdbPort(v.fdb(t), macB); p != "b" {
		t.Errorf("after c sent from b's MAC, the FDB has %s on %q, want b (static)", macString(macB), p)
	}

	// c floods random source MACs.
	rng := rand.New(rand.NewSource(1))
	var flood [][]byte
	for i := 0; i < 20000; i++ {
		src := [6]byte{0x02, 0x99}
		rng.Read(src[2:])
		flood = append(flood, vt.Frame(broadcast, src, i, 64))
	}
	sendAll(t, c, flood)
	time.Sleep(100 * time.Millisecond)
	es := v.fdb(t)
	pa, per := fdbPort(es, macA)
	pb, _ := fdbPort(es, macB)
	if pa != "a" || pb != "b" {
		t.Errorf("after c's flood of 20000 source MACs: FDB has %s on %q and %s on %q, want a and b", macString(macA), pa, macString(macB), pb)
	}
	if per["c"] > 100 {
		t.Errorf("after c's flood of 20000 source MACs: c holds %d FDB entries, its limit is 100", per["c"])
	}
	// Not a drop: the frames are still forwarded, only their source is not
	// learned; counted beside the drops.
	if n := v.stats(t)["c"].FDBLearnLimited; n == 0 {
		t.Errorf("c's stats count no fdb_learn_limited after 20000 source MACs (FDB entries per port %v)", per)
	}
	t.Logf("FDB entries per port after the flood: %v", per)

	// Unicast to b from a's own MAC still reaches b.
	b.Received()       // frees what the flood used
	b.PostRX(64, 2048) // at most 64 of the first ones are still posted
	checkPasses(t, v, a, b, "a", "b", "a (legitimate) to b")
}

// TestLearnedMACReleasedOnDisconnect is case 6 for mac=learn: the port
// locks onto the first source address its guest sends, drops any other as
// rx_spoofed, and lets go of it when the frontend disconnects, so that the
// next frontend (a guest rebooted with another MAC) locks onto its own.
func TestLearnedMACReleasedOnDisconnect(t *testing.T) {
	macX := [6]byte{0x02, 0, 0, 0, 0, 0x1a}
	macY := [6]byte{0x02, 0, 0, 0, 0, 0x1b}
	v := startVhostd(t, []port{{Name: "a", Opts: ",mac=learn"}, {Name: "b", MAC: macB}})
	defer v.finish(t, "6-learn", "a", "b")
	b := v.guest(t, "b", guestMem, stdFeatures, stdProtocol)
	b.PostRX(64, 2048)

	a1 := v.guest(t, "a", guestMem, stdFeatures, stdProtocol)
	sendAll(t, a1, [][]byte{vt.Frame(macB, macX, 0, 64)})
	sendAll(t, a1, [][]byte{vt.Frame(macB, macY, 1, 64)})
	time.Sleep(100 * time.Millisecond)
	if n := v.stats(t)["a"].Drops["rx_spoofed"]; n != 1 {
		t.Fatalf("first frontend on a, locked to %s, sent one frame from %s: rx_spoofed = %d, want 1", macString(macX), macString(macY), n)
	}
	if got := v.ports(t)["a"].LockedMAC; got != macString(macX) {
		t.Fatalf("a's locked MAC is %q, want %s", got, macString(macX))
	}
	a1.Close()
	deadline := time.Now().Add(5 * time.Second)
	for v.ports(t)["a"].Vhost.Connected || v.ports(t)["a"].LockedMAC != "" {
		if time.Now().After(deadline) {
			t.Fatalf("a still connected or locked to %q 5s after its frontend left", v.ports(t)["a"].LockedMAC)
		}
		time.Sleep(20 * time.Millisecond)
	}

	a2 := v.guest(t, "a", guestMem, stdFeatures, stdProtocol)
	defer a2.Close()
	b.Received()
	sendAll(t, a2, [][]byte{vt.Frame(macB, macY, 2, 64)})
	time.Sleep(100 * time.Millisecond)
	if n := v.stats(t)["a"].Drops["rx_spoofed"]; n != 1 {
		t.Errorf("second frontend on a sent from %s: rx_spoofed = %d, want still 1 (the lock was released)", macString(macY), n)
	}
	if got := v.ports(t)["a"].LockedMAC; got != macString(macY) {
		t.Errorf("a's locked MAC after the new frontend's first frame is %q, want %s", got, macString(macY))
	}
	got := false
	for _, fr := range b.Received() {
		if bytes.Equal(fr[6:12], macY[:]) {
			got = true
		}
	}
	if !got {
		t.Error("b did not receive the new frontend's frame")
	}
}
