package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/qemu"
	"github.com/vhostd/vhostd/test/guestimage"
)

type vm struct {
	name, ip, mac, sock string
}

// config is the guest's QEMU configuration: the test guest with one
// vhost-user NIC on the VM's socket.
func (g vm) config(t *testing.T, kernel, initrd string) qemu.GuestConfig {
	return qemu.GuestConfig{
		Kernel: kernel, Initrd: initrd,
		Append:     "guestip=" + g.ip + "/24",
		NICs:       []qemu.NIC{{SocketPath: g.sock, MAC: g.mac}},
		ConsoleLog: filepath.Join(t.TempDir(), g.name+"-console.log"),
	}
}

// bootGuest boots one guest whose NIC reconnects (for a QEMU restarted
// against a running vhostd); it is shut down at the end of the test.
func bootGuest(t *testing.T, ctx context.Context, kernel, initrd string, g vm) *qemu.Guest {
	t.Helper()
	cfg := g.config(t, kernel, initrd)
	cfg.NICs[0].Reconnect = 1
	return startGuests(t, ctx, cfg)[0]
}

var pingStats = regexp.MustCompile(`(\d+) packets transmitted, (\d+) packets received, (\d+)% packet loss`)

// ping runs count pings of size bytes from guest to ip and fails unless
// every one was answered.
func ping(t *testing.T, ctx context.Context, from *qemu.Guest, name, ip string, size, count int) {
	t.Helper()
	out, _, err := from.Run(ctx, fmt.Sprintf("ping -c %d -s %d -W 5 %s", count, size, ip))
	if err != nil {
		t.Fatalf("%s: ping %s: %v", name, ip, err)
	}
	m := pingStats.FindStringSubmatch(out)
	if m == nil || m[2] != fmt.Sprint(count) || m[3] != "0" {
		t.Fatalf("%s: ping -s %d %s: want %d/%d answered, 0%% loss; got:\n%s", name, size, ip, count, count, out)
	}
	t.Logf("%s -> %s, %d bytes: %s", name, ip, size, m[0])
}

// warmUp waits until the first ping gets through (ARP, link up).
func warmUp(t *testing.T, ctx context.Context, from *qemu.Guest, ip string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if out, code, err := from.Run(ctx, "ping -c 1 -W 2 "+ip); err == nil && code == 0 {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("no ping reply from %s within 60s: %v %s", ip, err, out)
		}
	}
}

// TestQEMUGuestsPing boots two Linux guests on two vhostd ports: they ping
// each other with small, large and fragmented pings without loss; then one
// reboots, and the other's QEMU restarts, and pings work again each time.
func TestQEMUGuestsPing(t *testing.T) {
	requirePeer(t, qemu.DefaultBinary)
	kernel, initrd := guestimage.ForTest(t)
	dir := sockDir(t)
	v := startVhostd(t, dir, "--socket", "vm1="+filepath.Join(dir, "vm1.sock"), "--socket", "vm2="+filepath.Join(dir, "vm2.sock"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	vms := []vm{
		{"vm1", "10.9.0.1", "52:54:00:00:00:01", filepath.Join(dir, "vm1.sock")},
		{"vm2", "10.9.0.2", "52:54:00:00:00:02", filepath.Join(dir, "vm2.sock")},
	}
	guests := startGuests(t, ctx, vms[0].config(t, kernel, initrd), vms[1].config(t, kernel, initrd))
	g1, g2 := guests[0], guests[1]

	pingBoth := func(stage string) {
		t.Logf("stage: %s", stage)
		warmUp(t, ctx, g1, vms[1].ip)
		for _, size := range []int{56, 1400, 4000} {
			ping(t, ctx, g1, "vm1", vms[1].ip, size, 5)
			ping(t, ctx, g2, "vm2", vms[0].ip, size, 5)
		}
	}
	pingBoth("first boot")

	ports := v.ports(t)
	for _, name := range []string{"vm1", "vm2"} {
		p := ports[name]
		feats := strings.Join(p.Vhost.Features, ",")
		if p.State != "running" || !strings.Contains(feats, "version_1") || !strings.Contains(feats, "event_idx") {
			t.Errorf("port %s: state %s features %s", name, p.State, feats)
		}
	}
	st := v.stats(t)
	for _, name := range []string{"vm1", "vm2"} {
		if s := st[name]; s.RxPackets < 30 || s.TxPackets < 30 {
			t.Errorf("port %s counted rx %d tx %d: fewer than the pings sent", name, s.RxPackets, s.TxPackets)
		}
	}

	// Guest reboot: the same connection sees the device reset and set up.
	if err := g1.Reboot(ctx); err != nil {
		t.Fatalf("reboot vm1: %v", err)
	}
	pingBoth("after vm1 rebooted")

	// QEMU restart: a new connection on vm2's socket.
	sctx, c := context.WithTimeout(ctx, 30*time.Second)
	g2.Shutdown(sctx)
	c()
	g2 = bootGuest(t, ctx, kernel, initrd, vms[1])
	pingBoth("after vm2's QEMU restarted")
	if lines := strings.Count(v.Log(), "level=error"); lines > 0 {
		t.Logf("vhostd logged %d errors:\n%s", lines, tail(v.Log(), 2000))
	}
}

// TestQEMULegacyHeaders runs two guests whose ports do not offer
// VERSION_1, so the Linux driver runs the legacy layout: vm1 with
// mergeable buffers (12-byte header), vm2 without (10-byte header). Frames
// cross between the two layouts.
func TestQEMULegacyHeaders(t *testing.T) {
	requirePeer(t, qemu.DefaultBinary)
	kernel, initrd := guestimage.ForTest(t)
	dir := sockDir(t)
	v := startVhostd(t, dir,
		"--socket", "vm1="+filepath.Join(dir, "vm1.sock")+",disable=version_1",
		"--socket", "vm2="+filepath.Join(dir, "vm2.sock")+",disable=version_1+mrg_rxbuf")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	vms := []vm{
		{"vm1", "10.9.0.1", "52:54:00:00:00:01", filepath.Join(dir, "vm1.sock")},
		{"vm2", "10.9.0.2", "52:54:00:00:00:02", filepath.Join(dir, "vm2.sock")},
	}
	g1 := bootGuest(t, ctx, kernel, initrd, vms[0])
	g2 := bootGuest(t, ctx, kernel, initrd, vms[1])
	warmUp(t, ctx, g1, vms[1].ip)
	for _, size := range []int{56, 1400, 4000} {
		ping(t, ctx, g1, "vm1", vms[1].ip, size, 3)
		ping(t, ctx, g2, "vm2", vms[0].ip, size, 3)
	}
	ports := v.ports(t)
	f1 := strings.Join(ports["vm1"].Vhost.Features, ",")
	f2 := strings.Join(ports["vm2"].Vhost.Features, ",")
	if strings.Contains(f1, "version_1") || !strings.Contains(f1, "mrg_rxbuf") {
		t.Errorf("vm1 negotiated %s, want legacy with mrg_rxbuf", f1)
	}
	if strings.Contains(f2, "version_1") || strings.Contains(f2, "mrg_rxbuf") {
		t.Errorf("vm2 negotiated %s, want legacy without mrg_rxbuf", f2)
	}
}
