// Package libvirt runs vhostd, built from this tree, with QEMU guests that
// libvirt starts from the domain XML in docs/libvirt (the XML README.md
// shows): two TCG domains whose vhostuser NICs connect to vhostd ping each
// other; the same with QEMU serving the sockets and vhostd connecting; and
// a NIC added with virsh attach-device carries pings.
//
// The test starts its own libvirtd and virtlogd in a private mount
// namespace (fresh /etc/libvirt, /run/libvirt, /var/lib/libvirt,
// /var/log/libvirt, /var/cache/libvirt), so a system libvirt is neither
// used nor changed, and stops them at the end. It needs root and Debian's
// libvirt-daemon, libvirt-daemon-driver-qemu and libvirt-clients
// (.ci/deps installs them); it fails, never skips, without them.
package libvirt

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/test/binaries"
	"github.com/vhostd/vhostd/test/guestimage"
)

const qemuBinary = "qemu-system-x86_64"

var vhostdBin, vhostctlBin string

func TestMain(m *testing.M) {
	dir, err := binaries.Build("./daemon/cmd/vhostd", "./daemon/cmd/vhostctl")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	vhostdBin = filepath.Join(dir, "vhostd")
	vhostctlBin = filepath.Join(dir, "vhostctl")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestLibvirt shares one libvirtd among its subtests (libvirtd probes
// QEMU for several seconds when it starts).
func TestLibvirt(t *testing.T) {
	lv := startLibvirt(t)
	t.Run("ClientMode", func(t *testing.T) { testClientMode(t, lv) })
	t.Run("ServerMode", func(t *testing.T) { testServerMode(t, lv) })
	t.Run("AttachDevice", func(t *testing.T) { testAttachDevice(t, lv) })
}

// testClientMode: vhostd serves two sockets, two domains with
// mode='client' NICs connect and ping each other through it.
func testClientMode(t *testing.T, lv *libvirt) {
	dir := sockDir(t)
	sock1, sock2 := filepath.Join(dir, "vm1.sock"), filepath.Join(dir, "vm2.sock")
	v := startVhostd(t, dir, "--socket", "vm1="+sock1, "--socket", "vm2="+sock2)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	doms := bootDomains(t, ctx, lv,
		domainSpec{name: "vm1", ip: "10.9.0.1", nic: clientNIC(t, "52:54:00:00:00:01", sock1)},
		domainSpec{name: "vm2", ip: "10.9.0.2", nic: clientNIC(t, "52:54:00:00:00:02", sock2)})
	pingBetween(t, ctx, v, doms[0], doms[1], "10.9.0.1", "10.9.0.2")
	// <reconnect>: QEMU connects to a new vhostd within a second or so.
	v = v.restart(t)
	afterRestart(t, ctx, v, doms[0], doms[1], "10.9.0.2")
	if out := lv.mustVirsh(t, ctx, "domiflist", "vm1"); !strings.Contains(out, "vhostuser") || !strings.Contains(out, "52:54:00:00:00:01") {
		t.Errorf("virsh domiflist vm1:\n%s", out)
	}
}

// testServerMode: QEMU serves the sockets (mode='server'), vhostd connects
// to them (--socket NAME=PATH,client).
func testServerMode(t *testing.T, lv *libvirt) {
	dir, qdir := sockDir(t), sockDir(t)
	sock1, sock2 := filepath.Join(qdir, "vm1.sock"), filepath.Join(qdir, "vm2.sock")
	// vhostd first: QEMU waits for its connection before it starts the
	// guest, and vhostd retries (at least once a second) until QEMU listens.
	v := startVhostd(t, dir, "--socket", "vm1="+sock1+",client", "--socket", "vm2="+sock2+",client")
	if out := v.vhostctl(t, "ports"); !strings.Contains(out, "connecting") {
		t.Errorf("client ports before QEMU runs, want connecting:\n%s", out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	doms := bootDomains(t, ctx, lv,
		domainSpec{name: "vm1", ip: "10.9.0.1", nic: serverNIC(t, "52:54:00:00:00:01", sock1)},
		domainSpec{name: "vm2", ip: "10.9.0.2", nic: serverNIC(t, "52:54:00:00:00:02", sock2)})
	pingBetween(t, ctx, v, doms[0], doms[1], "10.9.0.1", "10.9.0.2")
	// vhostd connects to QEMU's sockets again at once.
	v = v.restart(t)
	afterRestart(t, ctx, v, doms[0], doms[1], "10.9.0.2")
	for name, p := range v.ports(t) {
		if p.Vhost.Mode != "client" {
			t.Errorf("port %s: vhost mode %q, want client", name, p.Vhost.Mode)
		}
	}
}

// pingBetween pings both ways with small, large and fragmented pings, and
// checks that vhostd's ports are running and counted the frames.
func pingBetween(t *testing.T, ctx context.Context, v *vhostd, d1, d2 *domain, ip1, ip2 string) {
	t.Helper()
	start := time.Now()
	d1.warmUp(t, ctx, ip2)
	t.Logf("first ping answered after %v", time.Since(start).Round(time.Millisecond))
	for _, size := range []int{56, 1400, 4000} {
		d1.ping(t, ctx, ip2, size, 3)
		d2.ping(t, ctx, ip1, size, 3)
	}
	ports := v.ports(t)
	st := v.stats(t)
	for _, d := range []*domain{d1, d2} {
		p := ports[d.name]
		if p.State != "running" || !p.Vhost.Connected {
			t.Errorf("port %s: state %s, connected %v; want running", d.name, p.State, p.Vhost.Connected)
		}
		// 18 pings each way, the 4000-byte ones in 3 fragments: 30 frames.
		if s := st[d.name]; s.RxPackets < 30 || s.TxPackets < 30 {
			t.Errorf("port %s counted rx %d tx %d packets: fewer than the pings", d.name, s.RxPackets, s.TxPackets)
		}
	}
	out := v.vhostctl(t, "stats")
	t.Logf("vhostctl stats:\n%s", out)
	for _, d := range []*domain{d1, d2} {
		if !regexpLine(out, `^\s*`+d.name+`\s+\d{2,}\s+\d+\s+\d{2,}\s`) {
			t.Errorf("vhostctl stats has no line with traffic for %s", d.name)
		}
	}
	if out := v.vhostctl(t, "ports"); !regexpLine(out, `^vm1\s+vhost-user\s+running\s`) || !regexpLine(out, `^vm2\s+vhost-user\s+running\s`) {
		t.Errorf("vhostctl ports does not show vm1 and vm2 running:\n%s", out)
	}
}

// afterRestart checks that the guests of a restarted vhostd reconnect and
// ping each other again without being restarted themselves.
func afterRestart(t *testing.T, ctx context.Context, v *vhostd, d1, d2 *domain, ip2 string) {
	t.Helper()
	for _, d := range []*domain{d1, d2} {
		v.waitPortState(t, d.name, "running", 30*time.Second)
	}
	d1.warmUp(t, ctx, ip2)
	t.Logf("vhostd restarted: ports running and a ping answered %v after the new vhostd started", time.Since(v.started).Round(time.Millisecond))
	d1.ping(t, ctx, ip2, 1400, 3)
}

// testAttachDevice: a domain booted without a NIC gets one with virsh
// attach-device (docs/libvirt/nic.xml); a second domain pings it through
// vhostd; virsh detach-device removes it and vhostd sees it go.
//
// The pings go into the hot-plugged guest, not out of it: LAB.md, QEMU 7.2
// under TCG loses INTx interrupts of hot-plugged NICs, so pings the
// hot-plugged guest starts may be lost whatever the backend
// (test/e2e/hotplug_test.go does the same).
func testAttachDevice(t *testing.T, lv *libvirt) {
	dir := sockDir(t)
	sock1, sock3 := filepath.Join(dir, "vm1.sock"), filepath.Join(dir, "vm3.sock")
	v := startVhostd(t, dir, "--socket", "vm1="+sock1, "--socket", "vm3="+sock3)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	doms := bootDomains(t, ctx, lv,
		domainSpec{name: "vm1", ip: "10.9.0.1", nic: clientNIC(t, "52:54:00:00:00:01", sock1)},
		domainSpec{name: "vm3", ip: "10.9.0.3"})
	d1, d3 := doms[0], doms[1]
	if out := d3.run(t, ctx, "ls /sys/class/net"); strings.Contains(out, "eth") {
		t.Fatalf("vm3 booted without a NIC has interfaces: %s", out)
	}

	const mac = "52:54:00:00:00:03"
	nicFile := filepath.Join(t.TempDir(), "nic.xml")
	if err := os.WriteFile(nicFile, []byte(hotplugNIC(t, mac, sock3)), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out := lv.mustVirsh(t, ctx, "attach-device", "vm3", nicFile, "--live")
	t.Logf("virsh attach-device took %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
	// QEMU negotiates with vhostd at netdev_add.
	v.waitPortState(t, "vm3", "connected", 30*time.Second)

	// ACPI PCI hotplug: the guest's virtio_net makes eth0; netup waits 10 s
	// for it, allow more on a busy machine.
	out = d3.run(t, ctx, "i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; "+
		"netup eth0 10.9.0.3/24 && cat /sys/class/net/eth0/address")
	if !strings.Contains(out, mac) {
		t.Fatalf("hot-plugged eth0 has address %q, want %s", out, mac)
	}
	start = time.Now()
	d1.warmUp(t, ctx, "10.9.0.3")
	t.Logf("first ping into the hot-plugged NIC answered after %v", time.Since(start).Round(time.Millisecond))
	d1.ping(t, ctx, "10.9.0.3", 56, 5)
	d1.ping(t, ctx, "10.9.0.3", 1400, 3)
	if p := v.ports(t)["vm3"]; p.State != "running" {
		t.Errorf("port vm3 is %s after pings, want running", p.State)
	}
	if s := v.stats(t)["vm3"]; s.RxPackets < 8 || s.TxPackets < 8 {
		t.Errorf("port vm3 counted rx %d tx %d packets: fewer than the pings", s.RxPackets, s.TxPackets)
	}
	if out := lv.mustVirsh(t, ctx, "domiflist", "vm3"); !strings.Contains(out, mac) {
		t.Errorf("virsh domiflist vm3 does not list the attached NIC:\n%s", out)
	}

	// The guest releases the device through ACPI; virsh may return before.
	start = time.Now()
	out = lv.mustVirsh(t, ctx, "detach-device", "vm3", nicFile, "--live")
	t.Logf("virsh detach-device returned after %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
	v.waitPortState(t, "vm3", "listening", time.Minute)
	deadline := time.Now().Add(time.Minute)
	for strings.Contains(lv.mustVirsh(t, ctx, "domiflist", "vm3"), mac) {
		if time.Now().After(deadline) {
			t.Fatal("virsh domiflist vm3 still lists the NIC a minute after detach-device")
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("detach-device: NIC gone from libvirt and vhostd after %v", time.Since(start).Round(time.Millisecond))
	if out := d3.run(t, ctx, "ls /sys/class/net"); strings.Contains(out, "eth0") {
		t.Errorf("eth0 still in vm3 after detach-device: %s", out)
	}
}

// TestDocsXML checks that every XML snippet in README.md and docs/*.md is
// part of a file in docs/libvirt, the XML TestLibvirt runs: what the docs
// show has been tested. It needs neither libvirt nor root.
func TestDocsXML(t *testing.T) {
	root, err := guestimage.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	tested, err := filepath.Glob(filepath.Join(root, "docs", "libvirt", "*.xml"))
	if err != nil || len(tested) == 0 {
		t.Fatalf("no docs/libvirt/*.xml: %v", err)
	}
	var files []string
	for _, f := range tested {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, string(b))
	}
	docs, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	blocks := 0
	for _, doc := range append([]string{filepath.Join(root, "README.md")}, docs...) {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range xmlBlock.FindAllStringSubmatch(string(b), -1) {
			blocks++
			if !slices.ContainsFunc(files, func(f string) bool { return strings.Contains(f, m[1]) }) {
				rel, _ := filepath.Rel(root, doc)
				t.Errorf("%s: this XML is in no docs/libvirt/*.xml file (the tested XML); copy it from there:\n%s", rel, m[1])
			}
		}
	}
	if blocks == 0 {
		t.Error("no XML in README.md or docs/*.md")
	}
}

// xmlBlock matches a fenced XML block in Markdown; the submatch is its
// text, from the start of its first line to the end of its last.
var xmlBlock = regexp.MustCompile("(?s)```xml\n(.*?)\n```")
