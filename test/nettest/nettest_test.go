package nettest

import (
	"bytes"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestNamespaceAndVeth(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	ns, err := NewNS()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	v, err := NewVeth("vdnt0", "vdnt1", ns)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if !LinkExists("vdnt0") || LinkExists("vdnt1") || !ns.HasLink("vdnt1") {
		t.Fatalf("veth ends: here %v/%v, in ns %v", LinkExists("vdnt0"), LinkExists("vdnt1"), ns.HasLink("vdnt1"))
	}
	if err := ns.Configure("vdnt1", "10.9.99.2/24", 1400); err != nil {
		t.Fatal(err)
	}
	if err := ns.SetUp("vdnt1", false); err != nil {
		t.Fatal(err)
	}
	if p, err := Promiscuous("vdnt0"); err != nil || p {
		t.Fatalf("Promiscuous = %v, %v", p, err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if LinkExists("vdnt0") || ns.HasLink("vdnt1") {
		t.Fatal("veth pair not deleted")
	}
}

// TestCapture sends a frame into the local end of a veth pair and
// captures it on the peer end, inside the namespace.
func TestCapture(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	ns, err := NewNS()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	v, err := NewVeth("vdnc0", "vdnc1", ns)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := ns.SetUp("vdnc1", true); err != nil {
		t.Fatal(err)
	}
	c, err := ns.Capture("vdnc1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l, err := netlink.LinkByName("vdnc0")
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	frame := make([]byte, 60)
	copy(frame, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x42, 0x88, 0xb5})
	copy(frame[14:], "vhostd capture test")
	// The peer end may need a moment to report carrier: retry the send.
	buf := make([]byte, 2048)
	for try := 0; ; try++ {
		if err := unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: l.Attrs().Index}); err != nil {
			t.Fatal(err)
		}
		n, err := c.Read(buf, 500*time.Millisecond)
		if err == nil && bytes.Equal(buf[:n], frame) {
			break
		}
		if try == 10 {
			t.Fatalf("frame not captured: %v (%x)", err, buf[:n])
		}
	}
	// The kernel's own frames (IPv6 on link up) may follow; silence ends in
	// ErrNoFrame.
	for i := 0; ; i++ {
		if _, err := c.Read(buf, 200*time.Millisecond); err == ErrNoFrame {
			break
		} else if err != nil || i == 100 {
			t.Fatalf("Read after the frame: %v (after %d frames)", err, i)
		}
	}
}

// TestWriteAndSysctl sends a frame out of a capture in the namespace
// (Capture.Write) and receives it on the local end; and sets a sysctl in
// the namespace only (NS.Sysctl), read back there with NS.Do.
func TestWriteAndSysctl(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	ns, err := NewNS()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	v, err := NewVeth("vdnw0", "vdnw1", ns)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := ns.Sysctl("ipv6/conf/vdnw1/disable_ipv6", "1"); err != nil {
		t.Fatal(err)
	}
	var got []byte
	if err := ns.Do(func() (err error) {
		got, err = os.ReadFile("/proc/sys/net/ipv6/conf/vdnw1/disable_ipv6")
		return err
	}); err != nil || string(got) != "1\n" {
		t.Fatalf("disable_ipv6 in the namespace: %q, %v; want 1", got, err)
	}
	if _, err := os.Stat("/proc/sys/net/ipv6/conf/vdnw1"); err == nil {
		t.Fatal("the namespace's interface shows in this namespace's /proc/sys/net")
	}
	if err := ns.SetUp("vdnw1", true); err != nil {
		t.Fatal(err)
	}
	c, err := ns.Capture("vdnw1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l, err := netlink.LinkByName("vdnw0")
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: l.Attrs().Index}); err != nil {
		t.Fatal(err)
	}
	tv := unix.NsecToTimeval((500 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, 60)
	copy(frame, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x43, 0x88, 0xb5})
	copy(frame[14:], "vhostd write test")
	buf := make([]byte, 2048)
	for try := 0; ; try++ {
		if err := c.Write(frame); err != nil {
			t.Fatal(err)
		}
		n, _, err := unix.Recvfrom(fd, buf, 0)
		for err == nil && !bytes.Equal(buf[:n], frame) { // the kernel's own frames
			n, _, err = unix.Recvfrom(fd, buf, 0)
		}
		if err == nil {
			break
		}
		if try == 10 {
			t.Fatalf("frame not received on the local end: %v", err)
		}
	}
}
