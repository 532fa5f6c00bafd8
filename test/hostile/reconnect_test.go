package hostile

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	vt "github.com/vhostd/vhostd/vhost/vhosttest"
)

// TestImmediateReconnect is case 5, first half: a frontend connects,
// negotiates and closes, and the next connects at once, with no sleep
// (QEMU with reconnect, a restarted testpmd): every one must be served.
func TestImmediateReconnect(t *testing.T) {
	v := startVhostd(t, names("a", "b"))
	defer v.finish(t, "5-reconnect", "a", "b")
	const rounds = 50
	refused := 0
	var first error
	for i := 0; i < rounds; i++ {
		f, err := vt.Dial(v.Socks["a"], 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Negotiate(stdFeatures, stdProtocol); err != nil {
			refused++
			if first == nil {
				first = err
				t.Errorf("round %d: frontend connecting right after the previous one closed not served: %v", i, err)
			}
		}
		f.Close()
	}
	if refused > 0 {
		t.Errorf("%d of %d immediate reconnects not served", refused, rounds)
	}
}

// TestSecondFrontend is case 5, second half: while frontend A is connected
// and healthy, B connects to the same socket. B must not disrupt A, and B
// is either queued and served once A leaves, or refused after a bounded
// wait: "A leaves" closes A within 1 s of B connecting and wants B's
// GET_FEATURES answered; "A stays" keeps A and wants B to see EOF,
// unanswered, within ~10 s, A still passing traffic.
func TestSecondFrontend(t *testing.T) {
	t.Run("A leaves", func(t *testing.T) {
		v := startVhostd(t, names("a", "b"))
		defer v.finish(t, "5-A-leaves", "a", "b")
		a := v.guest(t, "a", guestMem, stdFeatures, stdProtocol)
		peer := v.guest(t, "b", guestMem, stdFeatures, stdProtocol)
		peer.PostRX(64, 2048)
		b := v.dial(t, "a")
		connected := time.Now()
		if err := b.Send(vt.GetFeatures, vt.FlagVersion, nil); err != nil {
			t.Fatalf("B: send GET_FEATURES: %v", err)
		}
		// A keeps working with B waiting.
		time.Sleep(200 * time.Millisecond)
		checkPasses(t, v, a, peer, "a", "b", "A, with B waiting")
		if d := time.Since(connected); d > 900*time.Millisecond {
			t.Logf("A's check took %v", d)
		}
		a.Close()
		if _, err := b.AckValue(vt.GetFeatures, 5*time.Second); err != nil {
			t.Errorf("B, connected while A was, not served within 5s of A leaving (%v after B connected): %v", time.Since(connected).Round(time.Millisecond), err)
		} else {
			t.Logf("B served %v after connecting", time.Since(connected).Round(time.Millisecond))
		}
	})
	t.Run("A stays", func(t *testing.T) {
		v := startVhostd(t, names("a", "b"))
		defer v.finish(t, "5-A-stays", "a", "b")
		a := v.guest(t, "a", guestMem, stdFeatures, stdProtocol)
		peer := v.guest(t, "b", guestMem, stdFeatures, stdProtocol)
		peer.PostRX(64, 2048)
		b := v.dial(t, "a")
		connected := time.Now()
		if err := b.Send(vt.GetFeatures, vt.FlagVersion, nil); err != nil {
			t.Logf("B: send GET_FEATURES: %v (refused already)", err)
		}
		b.C.SetReadDeadline(connected.Add(11 * time.Second))
		var buf [64]byte
		n, err := b.C.Read(buf[:])
		var ne net.Error
		switch {
		case n > 0:
			t.Errorf("B was answered (%x) while A holds the port", buf[:n])
		case errors.As(err, &ne) && ne.Timeout():
			t.Errorf("B neither served nor refused %v after connecting while A holds the port", time.Since(connected).Round(time.Millisecond))
		case err != nil && !errors.Is(err, io.EOF) && !isReset(err):
			t.Errorf("B: %v", err)
		default:
			t.Logf("B refused %v after connecting", time.Since(connected).Round(time.Millisecond))
		}
		checkPasses(t, v, a, peer, "a", "b", "A, after B came and went")
		if ps := v.ports(t); !ps["a"].Vhost.Connected {
			t.Errorf("port a not connected after B was refused: %+v", ps["a"].Vhost)
		}
	})
}

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// checkPasses sends a frame from guest a (on port pa) to guest peer (on
// pb, receive buffers posted) and fails the test unless it arrives within
// 3 s.
func checkPasses(t *testing.T, v *vhostd, a, peer *vt.Guest, pa, pb, who string) {
	t.Helper()
	want := vt.Frame(v.mac(pb), v.mac(pa), 7, 80)
	a.Send(want)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		for _, fr := range peer.Received() {
			if string(fr) == string(want) {
				return
			}
		}
		time.Sleep(time.Millisecond)
	}
	t.Errorf("%s: frame from %s to %s did not arrive within 3s", who, pa, pb)
}
