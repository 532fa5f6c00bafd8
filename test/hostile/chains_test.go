package hostile

import (
	"testing"
	"time"

	vt "github.com/vhostd/vhostd/vhost/vhosttest"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// TestShortChains: a guest sends, between frames to a peer the switch
// knows, transmit chains too short to hold a frame: only the virtio-net
// header in one descriptor, the header followed by an empty descriptor,
// part of a header, a header with 13 bytes of frame. Each is dropped and
// counted as rx_runt, the frames around them are delivered, and vhostd
// and its other ports carry on. (A header-only chain right after a
// frame to a known address once crashed vhostd.)
func TestShortChains(t *testing.T) {
	v := startVhostd(t, names("a", "b", "c", "d"))
	defer v.finish(t, "short chains", "c", "d")
	a := v.guest(t, "a", guestMem, stdFeatures, stdProtocol)
	b := v.guest(t, "b", guestMem, stdFeatures, stdProtocol)
	a.PostRX(64, 2048)
	b.PostRX(128, 2048)
	// b makes itself known.
	sendAll(t, b, [][]byte{vt.Frame(broadcast, macB, 0, 64)})
	a.Received()

	hdr := a.HdrLen
	short := [][]virtqueuetest.Buf{
		{{Data: make([]byte, hdr)}},
		{{Data: make([]byte, hdr)}, {Data: []byte{}}},
		{{Data: make([]byte, hdr/2)}},
		{{Data: make([]byte, hdr/2)}, {Data: make([]byte, hdr-hdr/2)}},
		{{Data: make([]byte, hdr)}, {Data: vt.Frame(macB, macA, 0, 14)[:13]}},
	}
	const rounds = 20
	before := a.TX.Driver.UsedIdx()
	sent := 0
	for i := 0; i < rounds; i++ {
		a.TX.Driver.CollectUsed()
		for j, c := range short {
			a.TX.Driver.AddChain([]virtqueuetest.Buf{{Data: make([]byte, hdr)}, {Data: vt.Frame(macB, macA, i*len(short)+j, 64)}})
			a.TX.Driver.AddChain(c)
			sent++
		}
		a.TX.KickNow()
		deadline := time.Now().Add(5 * time.Second)
		for int(a.TX.Driver.UsedIdx()-before) < 2*sent {
			if time.Now().After(deadline) {
				t.Fatalf("vhostd consumed %d of %d chains within 5s (alive: %v)", a.TX.Driver.UsedIdx()-before, 2*sent, v.alive())
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	if err := v.alive(); err != nil {
		t.Fatalf("after short chains: %v\n%s", err, tail(v.Log(), 4000))
	}
	deadline := time.Now().Add(5 * time.Second)
	got := 0
	for got < sent && time.Now().Before(deadline) {
		got += len(b.Received())
		time.Sleep(10 * time.Millisecond)
	}
	if got != sent {
		t.Errorf("b received %d of the %d frames a sent between the short chains", got, sent)
	}
	if st := v.stats(t)["a"]; st.Drops["rx_runt"] != uint64(rounds*len(short)) || st.RxPackets != uint64(sent) {
		t.Errorf("a: rx %d, drops %v; want rx %d and rx_runt %d", st.RxPackets, st.Drops, sent, rounds*len(short))
	}
}
