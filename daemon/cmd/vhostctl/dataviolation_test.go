package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vhostd/vhostd/daemon"
	"github.com/vhostd/vhostd/daemon/config"
	"github.com/vhostd/vhostd/daemon/control"
	"github.com/vhostd/vhostd/vhost"
	vt "github.com/vhostd/vhostd/vhost/vhosttest"
	"github.com/vhostd/vhostd/virtqueue"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// startDaemonPorts starts a real vhostd (in process) with the named ports.
func startDaemonPorts(t *testing.T, names ...string) config.Config {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Control = filepath.Join(dir, "ctl.sock")
	cfg.StateFile = filepath.Join(dir, "state.toml")
	for _, n := range names {
		cfg.Ports = append(cfg.Ports, config.Port{Name: n, Socket: filepath.Join(dir, n+".sock")})
	}
	l := logrus.New()
	l.SetLevel(logrus.ErrorLevel)
	d, err := daemon.Start(cfg, logrus.NewEntry(l))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	return cfg
}

// portStatus returns port name's vhost status from the control socket.
func portStatus(t *testing.T, ctl, name string) vhost.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var ports []control.PortInfo
	if err := control.Call(ctx, ctl, control.CmdPorts, &ports); err != nil {
		t.Fatal(err)
	}
	for _, p := range ports {
		if p.Name == name {
			return p.Vhost
		}
	}
	t.Fatalf("no port %s", name)
	return vhost.Status{}
}

// findKind returns the violation of kind on ring in st, if any.
func findKind(st vhost.Status, kind string, ring int) *vhost.Violation {
	for i, v := range st.Violations {
		if v.Kind == kind && v.Ring != nil && *v.Ring == ring {
			return &st.Violations[i]
		}
	}
	return nil
}

// Each data-path violation the fake driver can make, through the real
// vhost server and switch: it shows in the port's status with its section
// and count, and in vhostctl ports --detail (text and --json). Tolerated
// ones leave the queue running; refused ones break it.
func TestDataPathViolationsReported(t *testing.T) {
	cfg := startDaemonPorts(t, "a", "b")
	sock := func(n string) string { return filepath.Join(filepath.Dir(cfg.Control), n+".sock") }
	macA, macB := [6]byte{2, 0, 0, 0, 0, 0xa}, [6]byte{2, 0, 0, 0, 0, 0xb}
	std := uint64(vt.FeatureVersion1 | vt.FeatureProtocol | vt.FeatureIndirectDesc)
	hdr := make([]byte, 12)
	frame := vt.Frame(macB, macA, 0, 60)

	for _, c := range []struct {
		name     string
		features uint64
		kind     string
		ring     int
		what     string // in the report's text
		spec     string
		broken   bool   // the queue is refused
		also     string // another kind the same chain shows
		provoke  func(t *testing.T, a, b *vt.Guest)
	}{
		{"device-writable descriptor in a transmit chain", std, "writable_on_transmit", 1,
			"ring 1 (transmit): device-writable (VIRTQ_DESC_F_WRITE) descriptor in a chain of a transmit queue; its buffer was ignored; first in the chain at head 0, descriptor 1, flags 0x2",
			"virtio 1.2, 5.1.6 (packets are transmitted by placing them in the transmitq) and 2.7.5.1", false, "",
			func(t *testing.T, a, b *vt.Guest) {
				a.TX.Driver.AddChain([]virtqueuetest.Buf{{Data: hdr}, {Data: frame, Flags: virtqueue.DescFWrite}})
				a.TX.KickNow()
			}},
		{"device-readable descriptor in a receive chain", std, "readable_on_receive", 0,
			"ring 0 (receive): device-readable descriptor (no VIRTQ_DESC_F_WRITE) in a chain of a receive queue; its buffer was skipped; first in the chain at head 0, descriptor 0, flags 0x1",
			"virtio 1.2, 5.1.6 (buffers for incoming packets are placed in the receiveq) and 2.7.5.1 (a device MUST NOT write to a device-readable buffer)", false, "",
			func(t *testing.T, a, b *vt.Guest) {
				a.RX.Driver.AddChain([]virtqueuetest.Buf{{Data: hdr}, {Write: true, WriteLen: 2048}})
				a.RX.KickNow()
				b.Send(vt.Frame([6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, macB, 1, 60))
				deadline := time.Now().Add(5 * time.Second)
				for len(a.Received()) == 0 {
					if time.Now().After(deadline) {
						t.Fatal("the frame did not reach a's receive buffer past its readable descriptor")
					}
					time.Sleep(5 * time.Millisecond)
				}
			}},
		{"avail flags with EVENT_IDX", std | vt.FeatureEventIdx, "avail_flags", 1,
			"ring 1 (transmit): available ring flags other than the specification allows (first 0x1)",
			"virtio 1.2, 2.7.7.1 (without VIRTIO_F_EVENT_IDX the driver MUST set flags to 0 or 1; with it, to 0)", false, "",
			func(t *testing.T, a, b *vt.Guest) {
				a.TX.Driver.SetAvailFlags(virtqueue.AvailFNoInterrupt)
				a.Send(frame)
			}},
		{"avail flags without EVENT_IDX", std, "avail_flags", 1,
			"ring 1 (transmit): available ring flags other than the specification allows (first 0x4)",
			"virtio 1.2, 2.7.7.1", false, "",
			func(t *testing.T, a, b *vt.Guest) {
				a.TX.Driver.SetAvailFlags(4)
				a.Send(frame)
			}},
		{"INDIRECT with NEXT", std, "queue_broken", 1,
			"ring 1 (transmit): queue broken: indirect descriptor with NEXT flag; first in the chain at head 0, descriptor 0, flags 0x5",
			"virtio 1.2, 2.7.5.3.1 (a driver MUST NOT set both VIRTQ_DESC_F_INDIRECT and VIRTQ_DESC_F_NEXT)", true, "",
			func(t *testing.T, a, b *vt.Guest) {
				a.TX.Driver.AddIndirectFlags([]virtqueuetest.Buf{{Data: hdr}, {Data: frame}}, virtqueue.DescFNext)
				a.TX.KickNow()
			}},
		{"indirect table in an indirect table", std, "queue_broken", 1,
			"ring 1 (transmit): queue broken: nested indirect descriptor table; first in the chain at head 0, descriptor 1 of its indirect table, flags 0x4",
			"virtio 1.2, 2.7.5.3.1 (the driver MUST NOT set VIRTQ_DESC_F_INDIRECT within an indirect descriptor)", true, "",
			func(t *testing.T, a, b *vt.Guest) {
				a.TX.Driver.AddIndirect([]virtqueuetest.Buf{{Data: hdr}, {Data: make([]byte, 32), Flags: virtqueue.DescFIndirect}})
				a.TX.KickNow()
			}},
		{"readable after writable", std, "queue_broken", 1,
			"ring 1 (transmit): queue broken: device-readable descriptor after a device-writable one; first in the chain at head 0, descriptor 1, flags 0x0",
			"virtio 1.2, 2.7.4.2 (the driver MUST place any device-writable descriptor elements after any device-readable ones)", true,
			"writable_on_transmit", // its first descriptor, before the second breaks the queue
			func(t *testing.T, a, b *vt.Guest) {
				a.TX.Driver.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 64}, {Data: frame}})
				a.TX.KickNow()
			}},
		{"kick on a disabled ring", std, "kick_while_disabled", 1,
			"ring 1 (transmit): kicked 2 times while started but disabled (before SET_VRING_ENABLE 1, or after SET_VRING_ENABLE 0)",
			"virtio 1.2, 3.1.1 (the driver MUST NOT send any buffer available notifications to the device before setting DRIVER_OK) and 5.1.6.5.6.1", false, "",
			func(t *testing.T, a, b *vt.Guest) {
				if err := a.F.EnableRing(1, false); err != nil {
					t.Fatal(err)
				}
				if _, err := a.F.GetU64(vt.GetFeatures); err != nil { // a barrier
					t.Fatal(err)
				}
				a.TX.KickNow()
				a.TX.KickNow()
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, err := vt.DialGuest(sock("a"), 40<<20, c.features, vt.ProtocolReplyAck)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			b, err := vt.DialGuest(sock("b"), 40<<20, std, vt.ProtocolReplyAck)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			c.provoke(t, a, b)

			var v *vhost.Violation
			var st vhost.Status
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				st = portStatus(t, cfg.Control, "a")
				if v = findKind(st, c.kind, c.ring); v != nil && (c.kind != "kick_while_disabled" || v.Count == 2) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no %s violation on ring %d in %+v", c.kind, c.ring, st.Violations)
				}
			}
			if v.Request != "" || v.What != c.what || !strings.HasPrefix(v.Spec, c.spec) || v.Count == 0 || v.Time.IsZero() {
				t.Errorf("violation %+v\nwant what %q, spec %q...", v, c.what, c.spec)
			}
			var broken string
			for _, r := range st.Rings {
				if r.Index == c.ring {
					broken = r.Broken
				}
			}
			if (broken != "") != c.broken {
				t.Errorf("ring %d broken: %q, want broken=%v", c.ring, broken, c.broken)
			}
			if st.ViolationsSeen < int(v.Count) {
				t.Errorf("violations seen %d, fewer than the count %d", st.ViolationsSeen, v.Count)
			}
			// Only what was provoked.
			for _, o := range st.Violations {
				if o.Kind != "" && (o.Kind != c.kind || *o.Ring != c.ring) && o.Kind != c.also {
					t.Errorf("another data-path violation: %+v", o)
				}
			}

			out, err := vhostctl(t, "--control", cfg.Control, "ports", "--detail", "a")
			if err != nil {
				t.Fatalf("ports --detail: %v\n%s", err, out)
			}
			t.Logf("ports --detail a:\n%s", out)
			src := "data path"
			if v.Count > 1 {
				src += fmt.Sprintf(", %d times", v.Count)
			}
			for _, want := range []string{src + ": " + c.what, "breaks " + c.spec} {
				if !strings.Contains(out, want) {
					t.Errorf("no %q in:\n%s", want, out)
				}
			}
			out, err = vhostctl(t, "--control", cfg.Control, "ports", "--detail", "a", "--json")
			if err != nil {
				t.Fatalf("ports --detail --json: %v\n%s", err, out)
			}
			var p control.PortInfo
			if err := json.Unmarshal([]byte(out), &p); err != nil {
				t.Fatalf("--json: %v\n%s", err, out)
			}
			if jv := findKind(p.Vhost, c.kind, c.ring); jv == nil || jv.Count != v.Count || jv.Spec != v.Spec {
				t.Errorf("--json: %+v, want %+v", jv, v)
			}
			if !strings.Contains(out, fmt.Sprintf(`"kind": %q`, c.kind)) || !strings.Contains(out, fmt.Sprintf(`"count": %d`, v.Count)) {
				t.Errorf("--json lacks the kind or count:\n%s", out)
			}
		})
	}
}
