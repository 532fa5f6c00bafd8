package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/qemu"
	"github.com/vhostd/vhostd/test/guestimage"
	"github.com/vhostd/vhostd/test/testpmd"
)

// TestTestpmdPacked has DPDK's virtio driver with packed virtqueues
// (net_virtio_user packed_vq=1) send a fixed number of frames each way
// through vhostd, with mergeable receive buffers on and off, and with
// IN_ORDER (DPDK's in-order packed paths): every frame arrives, vhostd's
// counters equal testpmd's, and both ports negotiated ring_packed. A port with ring_packed masked (disable=ring_packed) makes
// the same driver fall back to split rings, and traffic still flows.
func TestTestpmdPacked(t *testing.T) {
	requirePeer(t, testpmd.DefaultBinary)
	const perPort = 5000
	for _, c := range []struct {
		mrg, inOrder, masked bool
	}{{false, false, false}, {true, false, false}, {false, true, false}, {true, false, true}} {
		name := fmt.Sprintf("mrg_rxbuf=%v", c.mrg)
		if c.inOrder {
			name += "/in_order"
		}
		if c.masked {
			name += "/ring_packed_masked"
		}
		t.Run(name, func(t *testing.T) {
			dir := sockDir(t)
			opt := ""
			if c.masked {
				opt = ",disable=ring_packed"
			}
			v := startVhostd(t, dir,
				"--socket", "a="+filepath.Join(dir, "a.sock")+opt,
				"--socket", "b="+filepath.Join(dir, "b.sock")+opt)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			mrg, inOrder := c.mrg, c.inOrder
			tp := v.startTestpmd(t, ctx, testpmd.Config{
				Ports: []testpmd.Port{
					{Socket: filepath.Join(dir, "a.sock"), MAC: macA, MrgRxbuf: &mrg, InOrder: &inOrder, PackedVQ: true},
					{Socket: filepath.Join(dir, "b.sock"), MAC: macB, MrgRxbuf: &mrg, InOrder: &inOrder, PackedVQ: true},
				},
				PeerMACs: []string{macB, macA},
				TxPkts:   60,
			})
			v.sendExactAB(t, ctx, tp, perPort)
			ports := v.ports(t)
			for _, name := range []string{"a", "b"} {
				p := ports[name]
				feats := strings.Join(p.Vhost.Features, ",")
				if p.State != "running" || strings.Contains(feats, "mrg_rxbuf") != c.mrg ||
					strings.Contains(feats, "ring_packed") == c.masked || strings.Contains(feats, "in_order") != c.inOrder {
					t.Errorf("port %s: state %s features %s", name, p.State, feats)
				}
				masked := strings.Join(p.Vhost.Masked, ",")
				if strings.Contains(masked, "ring_packed") != c.masked {
					t.Errorf("port %s: masked features %q", name, masked)
				}
			}
		})
	}
}

// TestQEMUGuestsPacked boots two Linux guests whose virtio-net devices use
// packed virtqueues (packed=on): they ping each other with small, large
// and fragmented pings without loss, and both ports negotiated
// ring_packed.
func TestQEMUGuestsPacked(t *testing.T) {
	requirePeer(t, qemu.DefaultBinary)
	kernel, initrd := guestimage.ForTest(t)
	dir := sockDir(t)
	v := startVhostd(t, dir,
		"--socket", "vm1="+filepath.Join(dir, "vm1.sock"),
		"--socket", "vm2="+filepath.Join(dir, "vm2.sock"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	vms := []vm{
		{"vm1", "10.9.0.1", "52:54:00:00:00:01", filepath.Join(dir, "vm1.sock")},
		{"vm2", "10.9.0.2", "52:54:00:00:00:02", filepath.Join(dir, "vm2.sock")},
	}
	var cfgs []qemu.GuestConfig
	for _, g := range vms {
		cfg := g.config(t, kernel, initrd)
		cfg.NICs[0].DeviceExtra = "packed=on"
		cfgs = append(cfgs, cfg)
	}
	gs := startGuests(t, ctx, cfgs...)
	g1, g2 := gs[0], gs[1]
	warmUp(t, ctx, g1, vms[1].ip)
	for _, size := range []int{56, 1400, 4000} {
		ping(t, ctx, g1, "vm1", vms[1].ip, size, 5)
		ping(t, ctx, g2, "vm2", vms[0].ip, size, 5)
	}
	ports := v.ports(t)
	for _, name := range []string{"vm1", "vm2"} {
		if f := strings.Join(ports[name].Vhost.Features, ","); !strings.Contains(f, "ring_packed") {
			t.Errorf("%s negotiated %s, want ring_packed", name, f)
		}
	}
	if n := strings.Count(v.Log(), "level=error"); n > 0 {
		t.Errorf("vhostd logged %d errors:\n%s", n, tail(v.Log(), 2000))
	}
}
