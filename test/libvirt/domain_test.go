package libvirt

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vhostd/vhostd/test/guestimage"
)

// The domain XML is read from docs/libvirt, the files README.md and
// docs/attach.md show, so the documented XML is the tested XML. The test
// swaps each example value (paths, names, addresses) for its own, and fails
// if one is no longer in the file.

// docFile returns docs/libvirt/name with each old string in pairs (old,
// new, old, new, ...) replaced by its new one; each old string must occur
// exactly once.
func docFile(t *testing.T, name string, pairs ...string) string {
	t.Helper()
	root, err := guestimage.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, "docs", "libvirt", name)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return replaceOnce(t, path, string(b), pairs...)
}

func replaceOnce(t *testing.T, what, s string, pairs ...string) string {
	t.Helper()
	for i := 0; i+1 < len(pairs); i += 2 {
		if n := strings.Count(s, pairs[i]); n != 1 {
			t.Fatalf("%s: %q occurs %d times, want once (the test substitutes it): keep the test and the file in step", what, pairs[i], n)
		}
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	return s
}

// interfaceRe matches the <interface> element of docs/libvirt/domain.xml.
var interfaceRe = regexp.MustCompile(`(?s)[ \t]*<interface type='vhostuser'>.*?</interface>\n`)

// clientNIC is domain.xml's NIC (QEMU connects to vhostd's socket) with
// the given MAC address and socket.
func clientNIC(t *testing.T, mac, sock string) string {
	t.Helper()
	nic := interfaceRe.FindString(docFile(t, "domain.xml"))
	if nic == "" {
		t.Fatal("docs/libvirt/domain.xml has no <interface type='vhostuser'>")
	}
	return replaceOnce(t, "domain.xml's <interface>", nic, "52:54:00:00:00:01", mac, "/run/vhostd/vm1.sock", sock)
}

// serverNIC is docs/libvirt/nic-server.xml: QEMU serves the socket, vhostd
// connects (--socket NAME=PATH,client).
func serverNIC(t *testing.T, mac, sock string) string {
	return docFile(t, "nic-server.xml", "52:54:00:00:00:01", mac, "/run/qemu/vm1.sock", sock)
}

// hotplugNIC is docs/libvirt/nic.xml, the element for virsh attach-device.
func hotplugNIC(t *testing.T, mac, sock string) string {
	return docFile(t, "nic.xml", "52:54:00:00:00:03", mac, "/run/vhostd/vm3.sock", sock)
}

// domainSpec is one test domain.
type domainSpec struct {
	name string
	ip   string // guestip= for eth0
	nic  string // the <interface> element; "" for none
}

// domainXML is docs/libvirt/domain.xml for spec: the test guest's kernel
// and initrd, its console on a socket in consoleDir, spec's NIC.
func domainXML(t *testing.T, spec domainSpec, kernel, initrd, consoleDir string) string {
	t.Helper()
	x := docFile(t, "domain.xml",
		"<name>vm1</name>", "<name>"+spec.name+"</name>",
		"/var/lib/vhostd-guest/vmlinuz", kernel,
		"/var/lib/vhostd-guest/initrd.gz", initrd,
		"guestip=10.9.0.1/24", "guestip="+spec.ip+"/24",
		"/run/vhostd-guests/vm1-console.sock", filepath.Join(consoleDir, spec.name+".con"),
		"/var/log/vhostd-guests/vm1-console.log", filepath.Join(consoleDir, spec.name+"-console.log"))
	nic := interfaceRe.FindString(x)
	if nic == "" {
		t.Fatal("docs/libvirt/domain.xml has no <interface type='vhostuser'>")
	}
	return strings.Replace(x, nic, spec.nic, 1)
}

// domain is a running libvirt domain booted from the test guest image.
type domain struct {
	name string
	lv   *libvirt
	con  *console
}

// bootDomains defines and starts the domains and waits until each guest
// is ready; they are destroyed and undefined at the end of the test.
// Each starts paused, so that the test is on its console before the guest
// prints anything, and is then resumed.
func bootDomains(t *testing.T, ctx context.Context, lv *libvirt, specs ...domainSpec) []*domain {
	t.Helper()
	kernel, initrd := guestimage.ForTest(t)
	consoleDir := sockDir(t)
	xmlDir := t.TempDir()
	doms := make([]*domain, len(specs))
	for i, spec := range specs {
		file := filepath.Join(xmlDir, spec.name+".xml")
		if err := os.WriteFile(file, []byte(domainXML(t, spec, kernel, initrd, consoleDir)), 0o644); err != nil {
			t.Fatal(err)
		}
		lv.mustVirsh(t, ctx, "define", file)
		d := &domain{name: spec.name, lv: lv}
		t.Cleanup(func() { d.destroy(t) })
		start := time.Now()
		lv.mustVirsh(t, ctx, "start", "--paused", spec.name)
		t.Logf("virsh start --paused %s took %v", spec.name, time.Since(start).Round(time.Millisecond))
		con, err := dialConsole(filepath.Join(consoleDir, spec.name+".con"))
		if err != nil {
			t.Fatalf("%s: %v", spec.name, err)
		}
		d.con = con
		lv.mustVirsh(t, ctx, "resume", spec.name)
		doms[i] = d
	}
	start := time.Now()
	var wg sync.WaitGroup
	for _, d := range doms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
			defer cancel()
			if err := d.con.WaitReady(bctx, 0); err != nil {
				t.Errorf("%s did not boot: %v\nconsole:\n%s\nQEMU log:\n%s", d.name, err, tail(d.con.Output(), 2000), lv.qemuLog(d.name))
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%d guests booted in %v", len(doms), time.Since(start).Round(time.Millisecond))
	return doms
}

// destroy stops the domain's QEMU (virsh destroy) and undefines it.
func (d *domain) destroy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := d.lv.virsh(ctx, "domstate", d.name); err == nil && !strings.Contains(out, "shut off") {
		if out, err := d.lv.virsh(ctx, "destroy", d.name); err != nil {
			t.Errorf("%v\n%s", err, out)
		}
	}
	if out, err := d.lv.virsh(ctx, "undefine", d.name); err != nil {
		t.Errorf("%v\n%s", err, out)
	}
	if d.con != nil {
		d.con.Close()
	}
}

// run runs cmd in the guest and fails the test unless it exits 0.
func (d *domain) run(t *testing.T, ctx context.Context, cmd string) string {
	t.Helper()
	out, code, err := d.con.Run(ctx, cmd)
	if err != nil || code != 0 {
		t.Fatalf("%s: %s: exit %d, %v\n%s", d.name, cmd, code, err, out)
	}
	return out
}

var pingStats = regexp.MustCompile(`(\d+) packets transmitted, (\d+) packets received, (\d+)% packet loss`)

// ping sends count pings of size bytes from d to ip and fails unless every
// one was answered.
func (d *domain) ping(t *testing.T, ctx context.Context, ip string, size, count int) {
	t.Helper()
	out, _, err := d.con.Run(ctx, fmt.Sprintf("ping -c %d -s %d -W 5 %s", count, size, ip))
	if err != nil {
		t.Fatalf("%s: ping %s: %v", d.name, ip, err)
	}
	m := pingStats.FindStringSubmatch(out)
	if m == nil || m[2] != fmt.Sprint(count) || m[3] != "0" {
		t.Fatalf("%s: ping -s %d %s: want %d/%d answered; got:\n%s", d.name, size, ip, count, count, out)
	}
	t.Logf("%s -> %s, %d bytes: %s", d.name, ip, size, m[0])
}

// warmUp waits until a first ping from d to ip gets an answer (ARP, link
// up).
func (d *domain) warmUp(t *testing.T, ctx context.Context, ip string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, code, err := d.con.Run(ctx, "ping -c 1 -W 2 "+ip)
		if err == nil && code == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no ping reply from %s within 90s: %v\n%s", d.name, ip, err, out)
		}
	}
}

// regexpLine reports whether a line of text matches the regular expression.
func regexpLine(text, expr string) bool {
	return regexp.MustCompile("(?m)" + expr).MatchString(text)
}
