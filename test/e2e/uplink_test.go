package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/daemon/control"
	"github.com/vhostd/vhostd/qemu"
	"github.com/vhostd/vhostd/test/guestimage"
	"github.com/vhostd/vhostd/test/nettest"
	"github.com/vhostd/vhostd/test/testpmd"
)

// Uplink tests: vhostd with a DPDK uplink (--uplink), against a QEMU guest
// and a network namespace behind the uplink, against dpdk-testpmd on both
// sides, and with bad arguments. Names of interfaces carry this process's
// pid so that concurrent runs do not collide; addresses (10.9.x.x) live
// only inside namespaces the tests make.

// ifname returns an interface name unique to this test process.
func ifname(prefix string) string { return fmt.Sprintf("%s%d", prefix, os.Getpid()%1000000) }

// newNS makes a network namespace that the test removes at its end.
func newNS(t *testing.T) *nettest.NS {
	t.Helper()
	ns, err := nettest.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// dpdkRunDir is where vhostd's EAL keeps its runtime files (vhostd uses
// the file prefix vhostd-PID).
func dpdkRunDir(pid int) string { return fmt.Sprintf("/var/run/dpdk/vhostd-%d", pid) }

// stopAndCheckDPDK stops v and checks it left no DPDK runtime directory.
// It shows what vhostd logged at warning level or worse, for the record.
func stopAndCheckDPDK(t *testing.T, v *vhostd) {
	t.Helper()
	pid := v.cmd.Process.Pid
	v.stop()
	for _, l := range strings.Split(v.Log(), "\n") {
		if strings.Contains(l, "level=error") || strings.Contains(l, "level=warning") {
			t.Logf("vhostd: %s", l)
		}
	}
	if _, err := os.Stat(dpdkRunDir(pid)); err == nil {
		t.Errorf("vhostd left %s behind", dpdkRunDir(pid))
	}
	if !strings.Contains(v.Log(), "uplink closed") {
		t.Errorf("vhostd did not log closing the uplink:\n%s", tail(v.Log(), 2000))
	}
}

// waitUplinkState polls vhostctl's view until the uplink's state is want.
func waitUplinkState(t *testing.T, v *vhostd, name, want string) control.PortInfo {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p := v.ports(t)[name]
		if p.State == want {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("uplink state %q, want %q after 10s\n%s", p.State, want, tail(v.Log(), 2000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestUplinkGuestPing boots a guest on a vhostd port and pings an address
// in a network namespace behind vhostd's uplink: over net_tap (the tap
// vhostd creates is moved into the namespace, after which vhostd reports
// its link as unknown) and over net_af_packet on a veth pair whose peer is
// in the namespace (with the link taken down and up again on the way).
//
// The two run in parallel: each is mostly a TCG guest booting.
func TestUplinkGuestPing(t *testing.T) {
	for _, driver := range []string{"net_tap", "net_af_packet"} {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			uplinkGuestPing(t, driver)
		})
	}
}

func uplinkGuestPing(t *testing.T, driver string) {
	requirePeer(t, qemu.DefaultBinary)
	kernel, initrd := guestimage.ForTest(t)
	ns := newNS(t)
	dir := sockDir(t)
	sock := filepath.Join(dir, "vm1.sock")
	const guestIP, hostIP = "10.9.3.1", "10.9.3.2"
	var nsIface, local string
	args := []string{"--socket", "vm1=" + sock}
	switch driver {
	case "net_tap":
		nsIface = ifname("vdt")
		args = append(args, "--uplink", "net_tap0,iface="+nsIface)
	case "net_af_packet":
		local, nsIface = ifname("vda"), ifname("vdb")
		veth, err := nettest.NewVeth(local, nsIface, ns)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { veth.Close() })
		args = append(args, "--uplink", "net_af_packet0,iface="+local)
	}
	v := startVhostd(t, dir, args...)
	if driver == "net_tap" {
		// vhostd made the tap before its control socket came up.
		if err := ns.MoveLink(nsIface); err != nil {
			t.Fatalf("%v\n%s", err, tail(v.Log(), 2000))
		}
	}
	if err := ns.Configure(nsIface, hostIP+"/24", 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	g := bootGuest(t, ctx, kernel, initrd, vm{"vm1", guestIP, "52:54:00:00:03:01", sock})
	sizes := []int{56, 1400}
	warmUp(t, ctx, g, hostIP)
	for _, size := range sizes {
		ping(t, ctx, g, "vm1", hostIP, size, 5)
	}

	up := v.ports(t)["uplink"]
	if up.Kind != "dpdk" || up.Uplink == nil || up.Uplink.Driver != driver {
		t.Errorf("vhostctl ports, uplink: %+v", up)
	}
	// net_tap wakes an idle vhostd through its rx interrupt fd; DPDK's
	// af_packet has none, so vhostd polls it.
	wantMode := map[string]string{"net_tap": "interrupts", "net_af_packet": "polling"}[driver]
	if up.Uplink != nil && up.Uplink.RxMode != wantMode {
		t.Errorf("uplink rx mode %q, want %q", up.Uplink.RxMode, wantMode)
	}
	st := v.stats(t)
	us := st["uplink"]
	pings := uint64(5 * len(sizes))
	if us.RxPackets < pings || us.TxPackets < pings || totalDrops(us) != 0 {
		t.Errorf("uplink counted rx %d tx %d drops %v; the guest sent %d pings", us.RxPackets, us.TxPackets, us.Drops, pings)
	}
	// DPDK's own counters agree with the switch's.
	if d := us.DPDK; d == nil || d.TxPackets != us.TxPackets || d.RxPackets < us.RxPackets || d.Error != "" {
		t.Errorf("uplink device counters %+v, switch counted rx %d tx %d", d, us.RxPackets, us.TxPackets)
	}
	if text := vhostctl(t, v, "stats"); !strings.Contains(text, "uplink device: rx") {
		t.Errorf("vhostctl stats lacks the device counters:\n%s", text)
	}
	if text := vhostctl(t, v, "ports"); !strings.Contains(text, "DPDK device") {
		t.Errorf("vhostctl ports lacks the uplink line:\n%s", text)
	}

	if driver == "net_tap" {
		// net_tap reads its link by interface name, in vhostd's namespace.
		waitUplinkState(t, v, "uplink", "unknown")
	}
	if driver == "net_af_packet" {
		// The veth's carrier follows its peer: take the peer down and up.
		waitUplinkState(t, v, "uplink", "up")
		if err := ns.SetUp(nsIface, false); err != nil {
			t.Fatal(err)
		}
		waitUplinkState(t, v, "uplink", "down")
		if err := ns.SetUp(nsIface, true); err != nil {
			t.Fatal(err)
		}
		p := waitUplinkState(t, v, "uplink", "up")
		if p.Uplink.LinkChanges < 2 {
			t.Errorf("link changes %d after down and up", p.Uplink.LinkChanges)
		}
		for _, want := range []string{`msg="uplink link down"`, `msg="uplink link up"`} {
			if !strings.Contains(v.Log(), want) {
				t.Errorf("vhostd did not log %s", want)
			}
		}
		warmUp(t, ctx, g, hostIP)
		ping(t, ctx, g, "vm1", hostIP, 56, 5)
	}

	stopAndCheckDPDK(t, v)
	switch driver {
	case "net_tap":
		if ns.HasLink(nsIface) || nettest.LinkExists(nsIface) {
			t.Errorf("tap %s still exists after vhostd stopped", nsIface)
		}
	case "net_af_packet":
		if p, err := nettest.Promiscuous(local); err != nil || p {
			t.Errorf("%s left promiscuous (%v, %v) after vhostd stopped", local, p, err)
		}
	}
}

// TestUplinkTestpmd has DPDK's virtio driver on both sides of vhostd, no
// guest: testpmd port 0 on a vhostd VM socket, testpmd port 1 on the
// vhost-user socket of vhostd's uplink (net_vhost, DPDK's vhost-user
// backend, as vhostd's uplink device). A fixed number of frames goes each
// way, 60-byte and, with uplink MTU 9000, 8000-byte ones; all arrive, and
// vhostd's counters and DPDK's device counters agree with testpmd's. When
// testpmd quits, the uplink's link goes down.
func TestUplinkTestpmd(t *testing.T) {
	t.Run("60B", func(t *testing.T) { uplinkTestpmd(t, 60, 0, 5000) })
	t.Run("jumbo8000B", func(t *testing.T) { uplinkTestpmd(t, 8000, 9000, 1000) })
}

func uplinkTestpmd(t *testing.T, frameLen, mtu, perPort int) {
	requirePeer(t, testpmd.DefaultBinary)
	dir := sockDir(t)
	upSock := filepath.Join(dir, "up.sock")
	metricsAddr := freeLoopbackAddr(t)
	args := []string{"--socket", "a=" + filepath.Join(dir, "a.sock"), "--uplink", "wan=net_vhost0,iface=" + upSock, "--metrics", metricsAddr}
	// testpmd checks --txpkts against the mbuf size parsed before it.
	tpArgs := []string{fmt.Sprintf("--txpkts=%d", frameLen)}
	if mtu > 0 {
		args = append(args, "--uplink-mtu", fmt.Sprint(mtu))
		tpArgs = append([]string{"--mbuf-size=9216", fmt.Sprintf("--max-pkt-len=%d", mtu+18)}, tpArgs...)
	}
	v := startVhostd(t, dir, args...)
	p := v.ports(t)["wan"]
	if p.Kind != "dpdk" || p.State != "down" || p.Uplink == nil || p.Uplink.Driver != "net_vhost" {
		t.Fatalf("uplink before testpmd connects: %+v", p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tp := v.startTestpmd(t, ctx, testpmd.Config{
		Ports: []testpmd.Port{
			{Socket: filepath.Join(dir, "a.sock"), MAC: macA},
			{Socket: upSock, MAC: macB},
		},
		PeerMACs:  []string{macB, macA},
		ExtraArgs: tpArgs,
	})
	waitUplinkState(t, v, "wan", "up")
	st, err := tp.SendExact(ctx, perPort, testpmd.SendOptions{})
	if err != nil {
		t.Fatalf("send: %v\nvhostd log:\n%s", err, tail(v.Log(), 3000))
	}
	for i, s := range st {
		if s.TxPackets != uint64(perPort) || s.RxPackets != uint64(perPort) {
			t.Errorf("testpmd port %d: tx %d rx %d, want %d each way", i, s.TxPackets, s.RxPackets, perPort)
		}
		if s.RxBytes != uint64(perPort*frameLen) {
			t.Errorf("testpmd port %d received %d bytes, want %d frames of %d", i, s.RxBytes, perPort, frameLen)
		}
	}
	vs := v.matchTestpmd(t, []string{"a", "wan"}, st)
	if d := vs["wan"].DPDK; d == nil || d.RxPackets != uint64(perPort) || d.TxPackets != uint64(perPort) || d.RxBytes != st[1].TxBytes || d.TxBytes != st[1].RxBytes {
		t.Errorf("uplink device counters %+v; testpmd port 1 sent %d (%d bytes) received %d (%d bytes)",
			d, st[1].TxPackets, st[1].TxBytes, st[1].RxPackets, st[1].RxBytes)
	}
	checkUplinkMetrics(t, metricsAddr, "wan", vs["wan"], st[1])
	fdb := vhostctl(t, v, "fdb")
	if !strings.Contains(fdb, macA+"  a") || !strings.Contains(fdb, macB+"  wan") {
		t.Errorf("vhostctl fdb:\n%s", fdb)
	}
	if err := tp.Close(); err != nil {
		t.Errorf("testpmd close: %v", err)
	}
	p = waitUplinkState(t, v, "wan", "down")
	if p.Uplink.LinkChanges < 2 || !strings.Contains(v.Log(), `msg="uplink link down"`) {
		t.Errorf("link changes %d; log:\n%s", p.Uplink.LinkChanges, tail(v.Log(), 2000))
	}
	stopAndCheckDPDK(t, v)
}

// hugepagesReserved reports whether this machine has hugepages reserved
// (HugePages_Total in /proc/meminfo).
func hugepagesReserved(t *testing.T) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "HugePages_Total:"); ok {
			return strings.TrimSpace(v) != "0"
		}
	}
	return false
}

// TestUplinkBadArgs checks that bad uplink arguments give the documented
// errors (docs/uplink.md), a non-zero exit, and leave nothing behind: no
// socket, no DPDK runtime directory, no tap interface.
func TestUplinkBadArgs(t *testing.T) {
	requirePeer(t)
	dir := sockDir(t)
	tap := ifname("vdx")
	// With no hugepages reserved the hint says so; with some (a machine
	// that runs other DPDK work) it says the ones asked for are not usable.
	hugeHint := []string{"DPDK EAL init", "no hugepages", "leave --no-huge in"}
	if hugepagesReserved(t) {
		hugeHint = []string{"DPDK EAL init", "hugepage memory is not usable: add --no-huge to --eal"}
	}
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"unknown device", []string{"--uplink", "no_such_dev0"},
			[]string{`probe DPDK device "no_such_dev0"`, `failed to parse device "no_such_dev0"`, "net_tap0,iface=NAME"}},
		{"missing interface", []string{"--uplink", "net_af_packet0,iface=vdnosuch0"},
			[]string{`no network interface "vdnosuch0"`}},
		{"interface name taken", []string{"--uplink", "net_tap0,iface=lo"},
			[]string{`a device interface named "lo" exists already`, "choose another iface= name"}},
		{"hugepages asked for", []string{"--uplink", "net_null0", "--eal", "--huge-dir /nonexistent"}, hugeHint},
		{"unknown EAL option", []string{"--uplink", "net_null0", "--eal", "--frobnicate"},
			[]string{"DPDK EAL init", "check the --eal arguments"}},
		{"jumbo on af_packet", []string{"--uplink", "net_af_packet0,iface=lo", "--uplink-mtu", "9000"},
			[]string{"MTU 9000 is more than DPDK's net_af_packet supports", "jumbo frames need a NIC, net_vhost or net_virtio_user"}},
		// The tap exists when the mbuf pool fails: it must be deleted.
		{"pool too big for EAL memory", []string{"--uplink", "net_tap0,iface=" + tap, "--eal", "-m 12"},
			[]string{"create mbuf pool", "--eal '-m MB'"}},
		{"eal without uplink", []string{"--eal", "-m 512"}, []string{"eal arguments given without an uplink"}},
		{"MTU out of range", []string{"--uplink", "net_null0", "--uplink-mtu", "70000"}, []string{"uplink_mtu = 70000: use 68 to 9600"}},
		{"empty device", []string{"--uplink", "wan="}, []string{"no DPDK device"}},
		{"name clash", []string{"--uplink", "vm=net_null0"}, []string{`uplink port name "vm" is used by a --socket port`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(vhostdBin, append([]string{"--control", filepath.Join(dir, "ctl.sock"), "--socket", "vm=" + filepath.Join(dir, "vm.sock")}, c.args...)...)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("vhostd %v exited 0:\n%s", c.args, out)
			}
			// The error is vhostd's last line (DPDK may print its usage
			// before it).
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			last := lines[len(lines)-1]
			for _, w := range c.want {
				if !strings.Contains(last, w) {
					t.Errorf("vhostd %v: last line %q lacks %q", c.args, last, w)
				}
			}
			if _, err := os.Stat(dpdkRunDir(cmd.Process.Pid)); err == nil {
				t.Errorf("left %s behind", dpdkRunDir(cmd.Process.Pid))
			}
			if ents, _ := filepath.Glob(filepath.Join(dir, "*.sock")); len(ents) > 0 {
				t.Errorf("left sockets behind: %v", ents)
			}
			if nettest.LinkExists(tap) {
				t.Errorf("left tap %s behind", tap)
			}
		})
	}
}

// TestUplinkWithoutCgo builds vhostd with CGO_ENABLED=0 and checks that
// --uplink then says DPDK support is missing.
func TestUplinkWithoutCgo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds vhostd; skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "vhostd-nocgo")
	build := exec.Command("go", "build", "-o", bin, "./daemon/cmd/vhostd")
	build.Dir = moduleRoot(t)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build: %v\n%s", err, out)
	}
	dir := sockDir(t)
	out, err := exec.Command(bin, "--control", filepath.Join(dir, "ctl.sock"), "--socket", "vm="+filepath.Join(dir, "vm.sock"), "--uplink", "net_null0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "built without DPDK support (CGO_ENABLED=0)") {
		t.Fatalf("vhostd without cgo, --uplink: %v\n%s", err, out)
	}
	if ents, _ := filepath.Glob(filepath.Join(dir, "*.sock")); len(ents) > 0 {
		t.Errorf("left sockets behind: %v", ents)
	}
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := guestimage.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// checkUplinkMetrics checks the uplink's series in vhostd's /metrics
// against vhostctl stats (s) and the testpmd port on the uplink's other
// side (tp); the uplink's link is up.
func checkUplinkMetrics(t *testing.T, addr, name string, s control.PortStats, tp testpmd.PortStats) {
	t.Helper()
	if s.DPDK == nil {
		t.Fatal("no DPDK counters in vhostctl stats")
	}
	fams := scrapeMetrics(t, addr)
	port := map[string]string{"port": name}
	for _, c := range []struct {
		metric string
		labels map[string]string
		want   uint64
	}{
		{"vhostd_port_rx_packets_total", port, tp.TxPackets},
		{"vhostd_port_tx_packets_total", port, tp.RxPackets},
		{"vhostd_uplink_rx_packets_total", port, s.DPDK.RxPackets},
		{"vhostd_uplink_tx_packets_total", port, s.DPDK.TxPackets},
		{"vhostd_uplink_rx_bytes_total", port, tp.TxBytes},
		{"vhostd_uplink_tx_bytes_total", port, tp.RxBytes},
		{"vhostd_uplink_rx_missed_total", port, s.DPDK.RxMissed},
		{"vhostd_uplink_rx_errors_total", port, s.DPDK.RxErrors},
		{"vhostd_uplink_tx_errors_total", port, s.DPDK.TxErrors},
		{"vhostd_uplink_rx_nombuf_total", port, s.DPDK.RxNoMbuf},
		{"vhostd_uplink_link_up", port, 1},
		{"vhostd_uplink_stats_error", port, 0},
		{"vhostd_port_state", map[string]string{"port": name, "state": "up"}, 1},
		{"vhostd_port_state", map[string]string{"port": name, "state": "down"}, 0},
	} {
		if got, ok := metricValue(fams, c.metric, c.labels); !ok || got != float64(c.want) {
			t.Errorf("%s%v = %v (%v), want %d", c.metric, c.labels, got, ok, c.want)
		}
	}
	if _, ok := metricValue(fams, "vhostd_port_connected", port); ok {
		t.Error("vhostd_port_connected for the uplink")
	}
}
