package daemon

import (
	"bytes"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/vhostd/vhostd/daemon/config"
	vt "github.com/vhostd/vhostd/vhost/vhosttest"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// TestStopDrainsTransmitRings: frames a guest has queued on its transmit
// ring when vhostd is told to stop (queued without a kick here, so that
// only the drain can find them) reach the peer guest before the
// frontends are dropped, and Stop logs how many it drained.
func TestStopDrainsTransmitRings(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Control = filepath.Join(dir, "control.sock")
	cfg.Ports = []config.Port{
		{Name: "a", Socket: filepath.Join(dir, "a.sock")},
		{Name: "b", Socket: filepath.Join(dir, "b.sock")},
	}
	l, hook := logtest.NewNullLogger()
	l.SetLevel(logrus.InfoLevel)
	d, err := Start(cfg, logrus.NewEntry(l))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	const feats = vt.FeatureVersion1 | vt.FeatureProtocol
	a, err := vt.DialGuest(cfg.Ports[0].Socket, 0, feats, vt.ProtocolReplyAck)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := vt.DialGuest(cfg.Ports[1].Socket, 0, feats, vt.ProtocolReplyAck)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	b.PostRX(128, 2048)
	// Queue the frames only once the pollers sleep, and have slept for a
	// while: one still in its idle spin after the rings were set up, or
	// about to wake for a kick of the setup (PostRX's), would forward
	// them itself and leave the drain nothing to do.
	asleepSince := time.Time{}
	for deadline := time.Now().Add(10 * time.Second); asleepSince.IsZero() || time.Since(asleepSince) < 100*time.Millisecond; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the pollers did not sleep for 100 ms in a row within 10 s of the guests' setup")
		}
		if !d.sw.Asleep() {
			asleepSince = time.Time{}
		} else if asleepSince.IsZero() {
			asleepSince = time.Now()
		}
	}
	macA, macB := [6]byte{2, 0, 0, 0, 0, 0xa}, [6]byte{2, 0, 0, 0, 0, 0xb}
	var sent [][]byte
	for i := 0; i < 100; i++ {
		f := vt.Frame(macB, macA, i, 60+i)
		sent = append(sent, f)
		a.TX.Driver.AddChain([]virtqueuetest.Buf{{Data: make([]byte, a.HdrLen)}, {Data: f}})
	}
	// No kick: the pollers sleep and know nothing of these frames.
	if got := b.Received(); len(got) != 0 {
		t.Fatalf("b received %d frames before the stop", len(got))
	}
	d.Stop()
	got := b.Received()
	if len(got) != len(sent) {
		t.Fatalf("b received %d of %d frames queued before Stop", len(got), len(sent))
	}
	for i := range sent {
		if !bytes.Equal(got[i], sent[i]) {
			t.Fatalf("frame %d: got %x, want %x", i, got[i], sent[i])
		}
	}
	var logged *logrus.Entry
	for _, e := range hook.AllEntries() {
		if e.Message == "shutdown: drained the guest transmit rings" {
			logged = e
		}
	}
	// The pollers may still be in their idle spin after the rings were
	// set up and forward a burst themselves before Stop: the drain moves
	// the rest, and leaves nothing.
	if logged == nil {
		t.Fatal("no drain log line")
	}
	if n, ok := logged.Data["drained"].(int); !ok || n < 1 || n > 100 || logged.Data["left"] != 0 {
		t.Fatalf("drain log %+v, want 1 to 100 drained and none left", logged)
	}
}
