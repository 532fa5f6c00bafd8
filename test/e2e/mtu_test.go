package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/qemu"
	"github.com/vhostd/vhostd/test/guestimage"
)

// TestQEMUGuestMTU: two guests on ports with mtu=1400, their QEMU devices
// with host_mtu=1400. QEMU sends NET_SET_MTU, vhostd takes it, and the
// Linux driver sees VIRTIO_NET_F_MTU: each guest's eth0 has MTU 1400 and
// cannot be raised past it. Full-size pings pass (a 1400-byte IP packet),
// larger ones are fragmented by the guest and pass too, and vhostd drops
// nothing for the MTU. A third guest whose device asks for more than its
// port's MTU (host_mtu=9000 on mtu=1400) is refused: QEMU does not start
// the device and says why.
func TestQEMUGuestMTU(t *testing.T) {
	requirePeer(t, qemu.DefaultBinary)
	kernel, initrd := guestimage.ForTest(t)
	dir := sockDir(t)
	v := startVhostd(t, dir,
		"--socket", "vm1="+filepath.Join(dir, "vm1.sock")+",mtu=1400",
		"--socket", "vm2="+filepath.Join(dir, "vm2.sock")+",mtu=1400",
		"--socket", "vm3="+filepath.Join(dir, "vm3.sock")+",mtu=1400")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	vms := []vm{
		{"vm1", "10.9.0.1", "52:54:00:00:00:01", filepath.Join(dir, "vm1.sock")},
		{"vm2", "10.9.0.2", "52:54:00:00:00:02", filepath.Join(dir, "vm2.sock")},
		{"vm3", "10.9.0.3", "52:54:00:00:00:03", filepath.Join(dir, "vm3.sock")},
	}
	var cfgs []qemu.GuestConfig
	for _, m := range vms {
		c := m.config(t, kernel, initrd)
		c.NICs[0].HostMTU = 1400
		cfgs = append(cfgs, c)
	}
	cfgs[2].NICs[0].HostMTU = 9000
	all := startGuests(t, ctx, cfgs...)
	guests, g3 := all[:2], all[2]
	g1, g2 := guests[0], guests[1]
	// The image's netup sets MTU 1500 first, which the driver refuses
	// now (its maximum is the device's 1400), and gives up: address the
	// interface here.
	for i, g := range guests {
		if out, code, err := g.Run(ctx, "ip addr replace "+vms[i].ip+"/24 dev eth0 && ip link set eth0 up"); err != nil || code != 0 {
			t.Fatalf("%s: configure eth0: exit %d, %v: %s", vms[i].name, code, err, out)
		}
	}
	warmUp(t, ctx, g1, vms[1].ip)

	for i, g := range guests {
		out, _, err := g.Run(ctx, "cat /sys/class/net/eth0/mtu")
		if err != nil {
			t.Fatalf("%s: %v", vms[i].name, err)
		}
		if got := strings.TrimSpace(out); got != "1400" {
			t.Fatalf("%s: eth0 MTU %q, want 1400 (what vhostd's port offers)", vms[i].name, got)
		}
		if _, code, err := g.Run(ctx, "ip link set eth0 mtu 1500"); err != nil || code == 0 {
			t.Fatalf("%s: raising eth0's MTU past 1400 worked (exit %d, %v): the driver did not take the device's MTU", vms[i].name, code, err)
		}
	}
	ping(t, ctx, g1, "vm1", vms[1].ip, 1400-28, 5)
	ping(t, ctx, g2, "vm2", vms[0].ip, 4000, 5)

	ports := v.ports(t)
	for _, name := range []string{"vm1", "vm2"} {
		p := ports[name]
		if p.Vhost.MTU != 1400 || !strings.Contains(strings.Join(p.Vhost.Features, ","), "mtu") {
			t.Errorf("port %s: mtu %d, features %v; want 1400 and mtu negotiated", name, p.Vhost.MTU, p.Vhost.Features)
		}
	}
	// vm3's driver has started the device by now (it is up as long as
	// the others): QEMU asked for 9000, vhostd refused.
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(g3.Stderr(), "MTU not supported by the backend") {
		if time.Now().After(deadline) {
			t.Fatalf("vm3's QEMU did not report the refused MTU; stderr:\n%s\nvhostd:\n%s", g3.Stderr(), tail(v.Log(), 2000))
		}
		time.Sleep(500 * time.Millisecond)
	}
	if p := v.ports(t)["vm3"]; p.Vhost.MTU != 1400 || !strings.Contains(v.Log(), "MTU 9000: this port takes 68 to 1400") {
		t.Errorf("vm3: MTU %d after the refusal, or vhostd did not log it:\n%s", p.Vhost.MTU, tail(v.Log(), 2000))
	}
	st := v.stats(t)
	for _, name := range []string{"vm1", "vm2"} {
		if n := st[name].Drops["mtu_exceeded"]; n != 0 {
			t.Errorf("port %s dropped %d frames for the MTU", name, n)
		}
	}
}
