package e2e

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/qemu"
	"github.com/vhostd/vhostd/test/guestimage"
	"github.com/vhostd/vhostd/test/nettest"
)

// offloadsOff turns every offload of a virtio-net device off (QEMU's
// properties): its driver sends complete frames and takes only those.
const offloadsOff = "csum=off,guest_csum=off,host_tso4=off,host_tso6=off,host_ecn=off,guest_tso4=off,guest_tso6=off,guest_ecn=off"

// transferTimeout bounds one transfer.
var transferTimeout = 3 * time.Minute

// transferBytes is what each transfer moves: 4 MiB, a few seconds under TCG.
const transferBytes = 4 << 20

// TestQEMUOffloads moves a file over TCP (busybox nc) from one Linux guest
// to another and compares its sha256 on both sides:
//   - both guests with the offloads on (QEMU's default, vhostd offers
//     them): vm1's TCP hands vhostd 64 KiB TSO super-frames with partial
//     checksums, which vm2 takes as they are (gso_passed on vm2);
//   - vm2 with every offload off: vhostd segments vm1's super-frames and
//     completes vm1's partial checksums in software (gso_segmented,
//     csum_completed on vm2), and vm2's stack takes every frame;
//   - both with the offloads off, the control: plain frames only.
//
// Neither transfer may drop a frame for its virtio-net header.
func TestQEMUOffloads(t *testing.T) {
	requirePeer(t, qemu.DefaultBinary)
	kernel, initrd := guestimage.ForTest(t)
	for _, c := range []struct {
		name    string
		vm1Opts string // vm1's device properties
		vm2Opts string // vm2's device properties
		vm2Port string // vm2's port options in vhostd
	}{
		{"both-on", "", "", ""},
		{"receiver-off", "", offloadsOff, ""},
		// The same through vhostd's feature mask, which QEMU cannot
		// override.
		{"receiver-masked", "", "", ",disable=csum+guest_csum+host_tso4+host_tso6+host_ecn+guest_tso4+guest_tso6+guest_ecn"},
		{"both-off", offloadsOff, offloadsOff, ""},
		// The same over packed rings.
		{"both-on-packed", "packed=on", "packed=on", ""},
		{"receiver-off-packed", "packed=on", offloadsOff + ",packed=on", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := sockDir(t)
			v := startVhostd(t, dir, "--socket", "vm1="+filepath.Join(dir, "vm1.sock"), "--socket", "vm2="+filepath.Join(dir, "vm2.sock")+c.vm2Port)
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
			defer cancel()
			vms := []vm{
				{"vm1", "10.9.0.1", "52:54:00:00:00:01", filepath.Join(dir, "vm1.sock")},
				{"vm2", "10.9.0.2", "52:54:00:00:00:02", filepath.Join(dir, "vm2.sock")},
			}
			cfg1, cfg2 := vms[0].config(t, kernel, initrd), vms[1].config(t, kernel, initrd)
			cfg1.NICs[0].DeviceExtra = c.vm1Opts
			cfg2.NICs[0].DeviceExtra = c.vm2Opts
			guests := startGuests(t, ctx, cfg1, cfg2)
			g1, g2 := guests[0], guests[1]
			warmUp(t, ctx, g1, vms[1].ip)
			for name, p := range v.ports(t) {
				packed := strings.Contains(strings.Join(p.Vhost.Features, ","), "ring_packed")
				if want := strings.HasSuffix(c.name, "-packed"); packed != want {
					t.Fatalf("port %s: ring_packed acked %v, want %v (features %v)", name, packed, want, p.Vhost.Features)
				}
			}

			ports := v.ports(t)
			f1 := "," + strings.Join(ports["vm1"].Vhost.Features, ",") + ","
			f2 := "," + strings.Join(ports["vm2"].Vhost.Features, ",") + ","
			for _, f := range []string{"csum", "guest_csum", "host_tso4", "guest_tso4"} {
				if on := strings.Contains(f1, ","+f+","); on != !strings.Contains(c.vm1Opts, offloadsOff) {
					t.Fatalf("vm1 negotiated %s: %v; features %s", f, on, f1)
				}
				if on := strings.Contains(f2, ","+f+","); on != (!strings.Contains(c.vm2Opts, offloadsOff) && c.vm2Port == "") {
					t.Fatalf("vm2 negotiated %s: %v; features %s", f, on, f2)
				}
			}

			sent := transfer(t, ctx, v, g1, g2, vms[1].ip)

			st := v.stats(t)
			s1, s2 := st["vm1"], st["vm2"]
			t.Logf("vm2 received %d frames: gso_passed=%d gso_segmented=%d gso_segments=%d csum_completed=%d; vm1: rx %d tx %d",
				s2.TxPackets, s2.GSOPassed, s2.GSOSegmented, s2.GSOSegments, s2.CsumCompleted, s1.RxPackets, s1.TxPackets)
			for _, s := range []struct {
				name  string
				drops map[string]uint64
			}{{"vm1", s1.Drops}, {"vm2", s2.Drops}} {
				for reason, n := range s.drops {
					if n > 0 && (strings.HasPrefix(reason, "rx_offload_") || reason == "tx_offload_unsupported" || reason == "mtu_exceeded") {
						t.Errorf("%s dropped %d frames as %s", s.name, n, reason)
					}
				}
			}
			vm1On := !strings.Contains(c.vm1Opts, offloadsOff)
			if vm1On && !strings.Contains(c.vm2Opts, offloadsOff) && c.vm2Port == "" {
				if s2.GSOPassed == 0 || s2.GSOSegmented != 0 {
					t.Errorf("both guests with TSO: vm2 got %d super-frames passed, %d segmented; want some passed, none segmented", s2.GSOPassed, s2.GSOSegmented)
				}
				// Super-frames carry several MSS each: far fewer
				// frames than 1448-byte segments would be.
				if s2.TxPackets >= sent/1448 {
					t.Errorf("vm2 received %d frames for %d bytes: no bigger than MSS-sized", s2.TxPackets, sent)
				}
			} else if !vm1On {
				if s2.GSOPassed+s2.GSOSegmented+s2.CsumCompleted != 0 {
					t.Errorf("no guest with offloads, yet vhostd did some: %+v", s2)
				}
				return
			} else {
				if s2.GSOSegmented == 0 || s2.GSOSegments <= s2.GSOSegmented || s2.GSOPassed != 0 || s2.CsumCompleted == 0 {
					t.Errorf("vm2 without offloads: %d super-frames segmented into %d, %d passed, %d checksums completed; want segmentation and completion in software",
						s2.GSOSegmented, s2.GSOSegments, s2.GSOPassed, s2.CsumCompleted)
				}
			}
			if out, err := runVhostctl(v, "stats"); err != nil || !strings.Contains(out, "vm2 offloads") {
				t.Errorf("vhostctl stats shows no offloads for vm2: %v\n%s", err, out)
			}
		})
	}
}

// transfer sends transferBytes of random data from g1 to g2 (at ip) with
// busybox nc, fails unless g2 got exactly those bytes, and returns how
// many it sent.
func transfer(t *testing.T, ctx context.Context, v *vhostd, g1, g2 *qemu.Guest, ip string) uint64 {
	t.Helper()
	want := strings.Fields(guestRun(t, ctx, g1, fmt.Sprintf("dd if=/dev/urandom of=/tmp/f bs=65536 count=%d 2>/dev/null && sha256sum /tmp/f", transferBytes/65536)))[0]
	// busybox nc quits at EOF on its stdin: the receiver's must stay open.
	guestRun(t, ctx, g2, "rm -f /tmp/r; (sleep 600 | nc -l -p 5001 >/tmp/r 2>/dev/null &); sleep 1")
	start := time.Now()
	guestRun(t, ctx, g1, "(nc "+ip+" 5001 </tmp/f >/dev/null 2>&1 &); true")
	got := 0
	for deadline := time.Now().Add(transferTimeout); got < transferBytes; {
		if time.Now().After(deadline) {
			out, _ := runVhostctl(v, "stats")
			t.Fatalf("vm2 got %d of %d bytes in %v; vhostd stats:\n%s\nlog:\n%s", got, transferBytes, transferTimeout, out, tail(v.Log(), 3000))
		}
		time.Sleep(time.Second)
		out := strings.TrimSpace(guestRun(t, ctx, g2, "wc -c </tmp/r"))
		n, err := strconv.Atoi(out)
		if err != nil {
			t.Fatalf("wc -c: %q", out)
		}
		got = n
	}
	t.Logf("%d bytes in %v", got, time.Since(start).Round(time.Millisecond))
	if got != transferBytes {
		t.Fatalf("vm2 got %d bytes, want %d", got, transferBytes)
	}
	gotSum := strings.Fields(guestRun(t, ctx, g2, "sha256sum /tmp/r"))[0]
	if gotSum != want {
		t.Fatalf("sha256 of what vm2 got %s, of what vm1 sent %s", gotSum, want)
	}
	g1.Run(ctx, "killall nc 2>/dev/null; true")
	g2.Run(ctx, "killall nc sleep 2>/dev/null; true")
	return transferBytes
}

// listenIn listens on addr (TCP) inside ns: the socket stays in ns,
// whichever thread uses it later.
func listenIn(ns *nettest.NS, addr string) (net.Listener, error) {
	type res struct {
		l   net.Listener
		err error
	}
	ch := make(chan res, 1)
	go func() {
		// The thread ends with the goroutine (locked, never unlocked),
		// so nothing else runs in ns.
		runtime.LockOSThread()
		if err := unix.Setns(ns.Fd(), unix.CLONE_NEWNET); err != nil {
			ch <- res{nil, fmt.Errorf("setns: %w", err)}
			return
		}
		l, err := net.Listen("tcp4", addr)
		ch <- res{l, err}
	}()
	r := <-ch
	return r.l, r.err
}

// TestUplinkGuestTCPOffloads sends a file over TCP from a guest with its
// offloads on to a kernel socket behind vhostd's DPDK uplink (net_tap,
// which takes no offloads from vhostd): vhostd segments the guest's TSO
// super-frames and completes its checksums in software before the frames
// leave, and the kernel gets the file intact (sha256 compared).
func TestUplinkGuestTCPOffloads(t *testing.T) {
	requirePeer(t, qemu.DefaultBinary)
	kernel, initrd := guestimage.ForTest(t)
	ns := newNS(t)
	dir := sockDir(t)
	sock := filepath.Join(dir, "vm1.sock")
	const guestIP, hostIP = "10.9.3.1", "10.9.3.2"
	nsIface := ifname("vdt")
	v := startVhostd(t, dir, "--socket", "vm1="+sock, "--uplink", "net_tap0,iface="+nsIface)
	if err := ns.MoveLink(nsIface); err != nil {
		t.Fatalf("%v\n%s", err, tail(v.Log(), 2000))
	}
	if err := ns.Configure(nsIface, hostIP+"/24", 0); err != nil {
		t.Fatal(err)
	}
	l, err := listenIn(ns, hostIP+":5001")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	g := bootGuest(t, ctx, kernel, initrd, vm{"vm1", guestIP, "52:54:00:00:03:01", sock})
	warmUp(t, ctx, g, hostIP)

	got := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- "accept: " + err.Error()
			return
		}
		defer c.Close()
		h := sha256.New()
		n, err := io.Copy(h, c)
		got <- fmt.Sprintf("%x %d %v", h.Sum(nil), n, err)
	}()
	want := strings.Fields(guestRun(t, ctx, g, fmt.Sprintf("dd if=/dev/urandom of=/tmp/f bs=65536 count=%d 2>/dev/null && sha256sum /tmp/f", transferBytes/65536)))[0]
	guestRun(t, ctx, g, "(nc "+hostIP+" 5001 </tmp/f >/dev/null 2>&1 &); true")
	select {
	case r := <-got:
		if r != fmt.Sprintf("%s %d <nil>", want, transferBytes) {
			t.Fatalf("the kernel got %q, want sha256 %s of %d bytes", r, want, transferBytes)
		}
	case <-time.After(transferTimeout):
		out, _ := runVhostctl(v, "stats")
		t.Fatalf("transfer not done in %v; stats:\n%s", transferTimeout, out)
	}
	us := v.stats(t)["uplink"]
	t.Logf("uplink: tx %d frames, gso_segmented=%d gso_segments=%d csum_completed=%d, drops %d", us.TxPackets, us.GSOSegmented, us.GSOSegments, us.CsumCompleted, totalDrops(us))
	if us.GSOSegmented == 0 || us.GSOSegments <= us.GSOSegmented || us.CsumCompleted == 0 {
		t.Errorf("uplink: %d super-frames segmented into %d, %d checksums completed; want both done in software", us.GSOSegmented, us.GSOSegments, us.CsumCompleted)
	}
	if n := us.Drops["tx_too_big"]; n != 0 {
		t.Errorf("uplink dropped %d frames as too big: super-frames went out whole", n)
	}
}

// TestUplinkVhostGuestTCPOffloads moves files over TCP between a guest on
// a vhostd port (vm1) and a guest behind vhostd's DPDK uplink, which is a
// net_vhost device with tso=1 that the second QEMU (vm2) connects to as
// its vhost-user backend. Both guests have their offloads on:
//   - vm2 -> vm1: vm2's TSO super-frames arrive at the uplink as RX_LRO
//     mbufs, become GSO frames in the switch and reach vm1 whole
//     (rx_lro on the uplink, gso_passed on vm1);
//   - vm1 -> vm2: DPDK 22.11's net_vhost reports checksums but no TSO, so
//     the uplink segments vm1's super-frames in software and hands the
//     partial checksums of the rest to the device (tx_csum_offloaded).
//
// Both transfers are compared by sha256.
func TestUplinkVhostGuestTCPOffloads(t *testing.T) {
	requirePeer(t, qemu.DefaultBinary)
	kernel, initrd := guestimage.ForTest(t)
	dir := sockDir(t)
	sock1, upSock := filepath.Join(dir, "vm1.sock"), filepath.Join(dir, "up.sock")
	v := startVhostd(t, dir, "--socket", "vm1="+sock1, "--uplink", "net_vhost0,iface="+upSock+",tso=1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	vms := []vm{
		{"vm1", "10.9.4.1", "52:54:00:00:04:01", sock1},
		{"vm2", "10.9.4.2", "52:54:00:00:04:02", upSock},
	}
	guests := startGuests(t, ctx, vms[0].config(t, kernel, initrd), vms[1].config(t, kernel, initrd))
	g1, g2 := guests[0], guests[1]
	warmUp(t, ctx, g1, vms[1].ip)
	up := v.ports(t)["uplink"].Uplink
	if up == nil {
		t.Fatal("no uplink in vhostctl ports")
	}
	t.Logf("uplink %s: tx offloads %v, rx offloads %v", up.Driver, up.TxOffloads, up.RxOffloads)

	transfer(t, ctx, v, g2, g1, vms[0].ip)
	st := v.stats(t)
	up = v.ports(t)["uplink"].Uplink
	t.Logf("vm2 -> vm1: uplink %+v; vm1 got %d frames, gso_passed=%d gso_segmented=%d", up.Offloads, st["vm1"].TxPackets, st["vm1"].GSOPassed, st["vm1"].GSOSegmented)
	if up.Offloads.RxLRO == 0 || st["vm1"].GSOPassed == 0 || up.Offloads.RxOffloadInvalid != 0 {
		t.Errorf("vm2's super-frames: uplink rx_lro=%d rx_offload_invalid=%d, vm1 gso_passed=%d; want them passed whole",
			up.Offloads.RxLRO, up.Offloads.RxOffloadInvalid, st["vm1"].GSOPassed)
	}

	transfer(t, ctx, v, g1, g2, vms[1].ip)
	st = v.stats(t)
	us := st["uplink"]
	up = v.ports(t)["uplink"].Uplink
	t.Logf("vm1 -> vm2: uplink tx %d frames, gso_passed=%d gso_segmented=%d gso_segments=%d csum_completed=%d, %+v",
		us.TxPackets, us.GSOPassed, us.GSOSegmented, us.GSOSegments, us.CsumCompleted, up.Offloads)
	if us.GSOSegmented == 0 || up.Offloads.TxCsum == 0 || us.CsumCompleted != 0 {
		t.Errorf("vm1's frames to the uplink: %d super-frames segmented, %d checksums to the device, %d completed in software; want segmentation in software and checksums on the device",
			us.GSOSegmented, up.Offloads.TxCsum, us.CsumCompleted)
	}
	for name, s := range st {
		for reason, n := range s.Drops {
			if n > 0 && (strings.HasPrefix(reason, "rx_offload_") || reason == "tx_offload_unsupported" || reason == "mtu_exceeded" || reason == "tx_too_big") {
				t.Errorf("%s dropped %d frames as %s", name, n, reason)
			}
		}
	}
	if out, err := runVhostctl(v, "ports"); err != nil || !strings.Contains(out, "uplink offloads: tx ") {
		t.Errorf("vhostctl ports shows no uplink offloads: %v\n%s", err, out)
	}
}
