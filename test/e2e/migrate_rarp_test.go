package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/qemu"
	"github.com/vhostd/vhostd/test/guestimage"
	"github.com/vhostd/vhostd/test/nettest"
)

// migrateTo starts the destination QEMU for cfg listening on uri (with
// extra arguments, e.g. -S), migrates the guest whose QMP connection is
// q into it, and returns the destination, its QMP connection and
// QEMU's figures. The destination is killed at the end of the test.
func migrateTo(t *testing.T, ctx context.Context, q *qemu.QMP, cfg qemu.GuestConfig, uri string, extra ...string) (*qemu.Guest, *qemu.QMP, qemu.MigrationInfo) {
	t.Helper()
	cfg.ExtraArgs = append(append([]string(nil), cfg.ExtraArgs...), extra...)
	there, err := qemu.StartIncoming(cfg, uri)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { there.Kill() })
	nq := dialQMP(t, ctx, cfg.QMPSocket)
	var st struct {
		Status string `json:"status"`
	}
	if err := nq.Execute(ctx, "query-status", nil, &st); err != nil || st.Status != "inmigrate" {
		t.Fatalf("destination QEMU: status %q, %v; want inmigrate\n%s", st.Status, err, there.Stderr())
	}
	info, err := qemu.Migrate(ctx, q, uri, 20*time.Millisecond)
	if err != nil {
		t.Fatalf("migrate: %v\ndestination stderr: %s", err, there.Stderr())
	}
	t.Logf("migration %s (QEMU: total %d ms, downtime %d ms, setup %d ms, %d MiB sent, %d dirty syncs)",
		info.Status, info.TotalTime, info.Downtime, info.SetupTime, info.RAM.Transferred>>20, info.RAM.Iterations)
	return there, nq, info
}

// checkRARP reports what is wrong with frame as the RARP announcement of
// mac (RFC 903 reverse request, as QEMU's own announce_self builds it):
// broadcast, from mac, ethertype 0x8035, Ethernet/IPv4 addresses, opcode
// 3, sender and target hardware address mac, IP addresses zero.
func checkRARP(frame []byte, mac net.HardwareAddr) error {
	if len(frame) < 60 {
		return fmt.Errorf("%d bytes, shorter than the Ethernet minimum of 60", len(frame))
	}
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	a := frame[14:]
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"destination", net.HardwareAddr(frame[0:6]).String(), bcast.String()},
		{"source", net.HardwareAddr(frame[6:12]).String(), mac.String()},
		{"ethertype", binary.BigEndian.Uint16(frame[12:]), uint16(0x8035)},
		{"hardware type", binary.BigEndian.Uint16(a[0:]), uint16(1)},
		{"protocol type", binary.BigEndian.Uint16(a[2:]), uint16(0x0800)},
		{"address lengths", [2]byte{a[4], a[5]}, [2]byte{6, 4}},
		{"opcode", binary.BigEndian.Uint16(a[6:]), uint16(3)},
		{"sender hardware address", net.HardwareAddr(a[8:14]).String(), mac.String()},
		{"sender IP", net.IP(a[14:18]).String(), "0.0.0.0"},
		{"target hardware address", net.HardwareAddr(a[18:24]).String(), mac.String()},
		{"target IP", net.IP(a[24:28]).String(), "0.0.0.0"},
	} {
		if c.got != c.want {
			return fmt.Errorf("%s %v, want %v", c.what, c.got, c.want)
		}
	}
	return nil
}

// TestQEMUMigrationRARP migrates a guest whose QEMU device has
// guest_announce=off: the driver is not asked to announce itself, and
// the destination QEMU sends VHOST_USER_SEND_RARP instead. vhostd's FDB
// has the guest's MAC on the destination port as soon as the migration
// completes, although the guest sent nothing there: every frame from
// that MAC after the migration, captured behind vhostd's uplink (a veth
// whose other end is in a network namespace), is a valid RARP, and the
// destination port received no other frame.
//
// It runs with ports that take any source address, and with mac=learn
// ports: the source port, locked to the guest's address, must free it
// when its QEMU stops the device at the end of the migration (QEMU stays
// connected, paused, until it quits), or the destination port refuses
// the RARP as spoofed.
func TestQEMUMigrationRARP(t *testing.T) {
	for _, mac := range []string{"any", "learn"} {
		t.Run("mac="+mac, func(t *testing.T) { migrateRARP(t, mac) })
	}
}

func migrateRARP(t *testing.T, mac string) {
	requirePeer(t, qemu.DefaultBinary)
	kernel, initrd := guestimage.ForTest(t)
	ns := newNS(t)
	local, nsIface := ifname("vdr"), ifname("vds")
	veth, err := nettest.NewVeth(local, nsIface, ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { veth.Close() })
	const guestIP, hostIP = "10.9.6.1", "10.9.6.2"
	if err := ns.Configure(nsIface, hostIP+"/24", 0); err != nil {
		t.Fatal(err)
	}
	capture, err := ns.Capture(nsIface)
	if err != nil {
		t.Fatal(err)
	}
	defer capture.Close()

	dir := sockDir(t)
	sock := func(name string) string { return filepath.Join(dir, name+".sock") }
	opt := ""
	if mac == "learn" {
		opt = ",mac=learn"
	}
	v := startVhostd(t, dir, "--socket", "src="+sock("src")+opt, "--socket", "dst="+sock("dst")+opt,
		"--uplink", "net_af_packet0,iface="+local)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	mover := vm{"vm1", guestIP, "52:54:00:00:06:01", sock("src")}
	hw, _ := net.ParseMAC(mover.mac)
	cfg := mover.config(t, kernel, initrd)
	cfg.NICs[0].DeviceExtra = "guest_announce=off"
	cfg.QMPSocket = filepath.Join(dir, "q0.qmp")
	here := startGuests(t, ctx, cfg)[0]
	q := dialQMP(t, ctx, cfg.QMPSocket)
	// A quiet guest, so that what comes from its address after the
	// migration is the announcement: no IPv6 (its router solicitations
	// and multicast reports go on for seconds after boot), and no ARP
	// request from the namespace for the guest to answer.
	if out, code, err := here.Run(ctx, "echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6 && echo 1 >/proc/sys/net/ipv6/conf/eth0/disable_ipv6"); err != nil || code != 0 {
		t.Fatalf("guest: disable IPv6: exit %d, %v: %s", code, err, out)
	}
	if err := ns.Neigh(nsIface, guestIP, hw); err != nil {
		t.Fatal(err)
	}
	warmUp(t, ctx, here, hostIP)
	if e := fdbPort(t, v, mover.mac); e != "src" {
		t.Fatalf("before the migration the FDB has %s on %q, want src", mover.mac, e)
	}

	// Forget what was captured so far (the pings, the kernel's own frames).
	buf := make([]byte, 2048)
	for {
		if _, err := capture.Read(buf, 100*time.Millisecond); err == nettest.ErrNoFrame {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}

	next := vm{"vm1-dst", guestIP, mover.mac, sock("dst")}
	ncfg := next.config(t, kernel, initrd)
	ncfg.NICs[0].DeviceExtra = "guest_announce=off"
	ncfg.QMPSocket = filepath.Join(dir, "q1.qmp")
	there, _, _ := migrateTo(t, ctx, q, ncfg, "unix:"+filepath.Join(dir, "mig1"))
	done := time.Now()
	for fdbPort(t, v, mover.mac) != "dst" {
		if time.Since(done) > 2*time.Second {
			t.Fatalf("2 s after the migration the FDB has %s on %q, want dst\n%s", mover.mac, fdbPort(t, v, mover.mac), tail(v.Log(), 3000))
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("FDB: %s on dst %v after the migration completed", mover.mac, time.Since(done).Round(time.Millisecond))

	// QEMU announces five times, 50 ms apart and then 100 ms more each
	// time: all is over within about 1.5 s.
	var rarps int
	for time.Since(done) < 3*time.Second {
		n, err := capture.Read(buf, 200*time.Millisecond)
		if err == nettest.ErrNoFrame {
			continue
		} else if err != nil {
			t.Fatal(err)
		}
		f := buf[:n]
		if n < 14 || !bytes.Equal(f[6:12], hw) {
			continue
		}
		if err := checkRARP(f, hw); err != nil {
			t.Errorf("frame %d from %s after the migration is not its RARP: %v: % x", rarps+1, mover.mac, err, f)
			continue
		}
		rarps++
	}
	if rarps == 0 {
		t.Fatalf("no RARP from %s behind the uplink within 3 s of the migration\n%s", mover.mac, tail(v.Log(), 3000))
	}
	st := v.stats(t)["dst"]
	t.Logf("%d RARPs captured behind the uplink; port dst received %d frames", rarps, st.RxPackets)
	if st.RxPackets != uint64(rarps) {
		t.Errorf("port dst received %d frames, but %d RARPs came out of the uplink: the guest sent frames of its own, or a RARP was lost", st.RxPackets, rarps)
	}
	if n := strings.Count(v.Log(), "RARP sent for the guest (SEND_RARP)"); n == 0 {
		t.Errorf("vhostd did not log SEND_RARP\n%s", tail(v.Log(), 3000))
	} else {
		t.Logf("vhostd served %d SEND_RARP requests", n)
	}

	// The guest runs on the destination and reaches the namespace.
	ping(t, ctx, there, next.name, hostIP, 56, 3)
	q.Execute(ctx, "quit", nil, nil)
	select {
	case <-here.Done():
	case <-time.After(10 * time.Second):
		here.Kill()
	}
}

// fdbPort returns the port vhostd's FDB has mac on, or "".
func fdbPort(t *testing.T, v *vhostd, mac string) string {
	t.Helper()
	for _, e := range v.fdb(t) {
		if e.MAC == mac {
			return e.Port
		}
	}
	return ""
}
