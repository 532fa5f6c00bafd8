//go:build linux

package qemu

import (
	"encoding/json"
	"errors"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/qemu/qmptest"
)

func fakeMachine(t *testing.T, mem ...qmptest.Memdev) (*qmptest.Server, *qmptest.Machine, *QMP) {
	t.Helper()
	s := qmptest.NewServer(t)
	m := qmptest.NewMachine(mem...)
	m.Install(s)
	return s, m, dialFake(t, s)
}

func testNIC() NIC {
	return NIC{ID: NICID("vm3"), SocketPath: "/run/vhostd/vm3.sock", MAC: PortMAC("vm3"), Reconnect: 1}
}

func TestAttachDetachNIC(t *testing.T) {
	s, m, q := fakeMachine(t, qmptest.SharedMemory)
	ctx := withTimeout(t, 5*time.Second)
	n := testNIC()
	if err := AttachNIC(ctx, q, n); err != nil {
		t.Fatal(err)
	}
	want := []string{"qmp_capabilities", "query-memdev", "chardev-add", "netdev_add", "device_add"}
	if got := s.Commands(); !reflect.DeepEqual(got, want) {
		t.Errorf("attach sent %v, want %v", got, want)
	}
	var backend struct {
		Type string
		Data struct {
			Addr struct {
				Type string
				Data struct{ Path string }
			}
			Server    *bool
			Reconnect int
		}
	}
	if err := json.Unmarshal(m.Chardev("vhostd-vm3-chr"), &backend); err != nil {
		t.Fatalf("chardev: %v", err)
	}
	if b := backend; b.Type != "socket" || b.Data.Addr.Type != "unix" || b.Data.Addr.Data.Path != n.SocketPath ||
		b.Data.Server == nil || *b.Data.Server || b.Data.Reconnect != 1 {
		t.Errorf("chardev backend %+v", backend)
	}
	if got := m.Netdevs(); !reflect.DeepEqual(got, []string{"vhostd-vm3-net"}) {
		t.Errorf("netdevs %v", got)
	}
	dev := m.Device("vhostd-vm3")
	wantDev := map[string]any{"driver": "virtio-net-pci", "id": "vhostd-vm3", "netdev": "vhostd-vm3-net", "vectors": 0.0, "mac": n.MAC}
	if !reflect.DeepEqual(dev, wantDev) {
		t.Errorf("device_add %v, want %v", dev, wantDev)
	}

	if err := DetachNIC(ctx, q, n.ID, 0); err != nil {
		t.Fatal(err)
	}
	if c, nd, d := m.Chardevs(), m.Netdevs(), m.Devices(); len(c)+len(nd)+len(d) != 0 {
		t.Errorf("left behind: chardevs %v netdevs %v devices %v", c, nd, d)
	}
	// Detaching again finds nothing.
	if err := DetachNIC(ctx, q, n.ID, 0); !errors.Is(err, ErrNICNotFound) {
		t.Errorf("second detach: %v", err)
	}
	// And the NIC can be attached again.
	if err := AttachNIC(ctx, q, n); err != nil {
		t.Errorf("attach after detach: %v", err)
	}
}

// TestAttachPrivateMemory: memory a backend cannot map is refused before
// anything is added.
func TestAttachPrivateMemory(t *testing.T) {
	for _, mem := range [][]qmptest.Memdev{
		{qmptest.PrivateMemory},
		{qmptest.SharedMemory, {ID: "extra", Size: 64 << 20, Share: false}},
		nil,
	} {
		s, m, q := fakeMachine(t, mem...)
		err := AttachNIC(withTimeout(t, 5*time.Second), q, testNIC())
		if !errors.Is(err, ErrMemoryNotShared) || !strings.Contains(err.Error(), "share=on") {
			t.Errorf("memory %v: attach error %v", mem, err)
		}
		if len(mem) > 0 && !strings.Contains(err.Error(), mem[len(mem)-1].ID) {
			t.Errorf("error does not name the private backend: %v", err)
		}
		if got := s.Commands(); len(got) != 2 || len(m.Chardevs()) != 0 {
			t.Errorf("memory %v: commands %v, chardevs %v", mem, got, m.Chardevs())
		}
	}
}

// TestCheckSharedMemoryOldQEMU: without "share" in query-memdev (before
// QEMU 6.1) the backend object is asked.
func TestCheckSharedMemoryOldQEMU(t *testing.T) {
	for _, share := range []bool{true, false} {
		s, _, q := fakeMachine(t, qmptest.Memdev{ID: "mem", Share: share})
		s.Handle("query-memdev", func(c *qmptest.Conn, r *qmptest.Request) {
			c.Reply(r, []map[string]any{{"id": "mem", "size": 1 << 28}})
		})
		err := CheckSharedMemory(withTimeout(t, 5*time.Second), q)
		if share != (err == nil) || !share && !errors.Is(err, ErrMemoryNotShared) {
			t.Errorf("share=%v: %v", share, err)
		}
		if got := s.Commands(); got[len(got)-1] != "qom-get" {
			t.Errorf("share=%v: commands %v", share, got)
		}
	}
}

// TestAttachUndo: a failed step undoes the ones before it.
func TestAttachUndo(t *testing.T) {
	for _, failing := range []string{"chardev-add", "netdev_add", "device_add"} {
		t.Run(failing, func(t *testing.T) {
			s, m, q := fakeMachine(t, qmptest.SharedMemory)
			s.Handle(failing, func(c *qmptest.Conn, r *qmptest.Request) {
				c.Fail(r, "GenericError", "injected failure")
			})
			err := AttachNIC(withTimeout(t, 5*time.Second), q, testNIC())
			var qe *QMPError
			if !errors.As(err, &qe) || qe.Command != failing || strings.Contains(err.Error(), "undo") {
				t.Fatalf("attach: %v", err)
			}
			if c, nd, d := m.Chardevs(), m.Netdevs(), m.Devices(); len(c)+len(nd)+len(d) != 0 {
				t.Errorf("left behind: chardevs %v netdevs %v devices %v", c, nd, d)
			}
		})
	}
}

// TestDetachGuestHoldsOn: a guest that does not release the device leaves
// the NIC attached and detach fails; once it lets go, detach completes.
func TestDetachGuestHoldsOn(t *testing.T) {
	_, m, q := fakeMachine(t, qmptest.SharedMemory)
	ctx := withTimeout(t, 5*time.Second)
	n := testNIC()
	if err := AttachNIC(ctx, q, n); err != nil {
		t.Fatal(err)
	}
	m.SetUnplugDelay(-1)
	err := DetachNIC(ctx, q, n.ID, 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "did not release") {
		t.Fatalf("detach with a guest that holds on: %v", err)
	}
	if len(m.Netdevs()) != 1 || len(m.Chardevs()) != 1 {
		t.Errorf("backend removed under a device still in use: netdevs %v chardevs %v", m.Netdevs(), m.Chardevs())
	}
	// The second device_del finds the first pending and waits for it.
	go func() {
		time.Sleep(50 * time.Millisecond)
		m.Release(n.ID)
	}()
	if err := DetachNIC(ctx, q, n.ID, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if c, nd, d := m.Chardevs(), m.Netdevs(), m.Devices(); len(c)+len(nd)+len(d) != 0 {
		t.Errorf("left behind: chardevs %v netdevs %v devices %v", c, nd, d)
	}
}

// TestDetachMissedEvent: when DEVICE_DELETED does not come but the device
// is gone, detach goes on.
func TestDetachMissedEvent(t *testing.T) {
	s, m, q := fakeMachine(t, qmptest.SharedMemory)
	ctx := withTimeout(t, 5*time.Second)
	n := testNIC()
	if err := AttachNIC(ctx, q, n); err != nil {
		t.Fatal(err)
	}
	s.Handle("device_del", func(c *qmptest.Conn, r *qmptest.Request) { c.Reply(r, struct{}{}) })
	s.Handle("qom-list", func(c *qmptest.Conn, r *qmptest.Request) { c.Reply(r, []any{}) })
	if err := DetachNIC(ctx, q, n.ID, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if len(m.Netdevs())+len(m.Chardevs()) != 0 {
		t.Errorf("left behind: netdevs %v chardevs %v", m.Netdevs(), m.Chardevs())
	}
}

func TestAttachNICValidates(t *testing.T) {
	_, _, q := fakeMachine(t, qmptest.SharedMemory)
	ctx := withTimeout(t, 5*time.Second)
	for _, n := range []NIC{{SocketPath: "/x.sock"}, {ID: "a"}, {ID: "a", SocketPath: "/x.sock", Server: true}} {
		if err := AttachNIC(ctx, q, n); err == nil {
			t.Errorf("AttachNIC(%+v) succeeded", n)
		}
	}
}

func TestPortMACAndNICID(t *testing.T) {
	a, b := PortMAC("vm3"), PortMAC("vm4")
	if a != PortMAC("vm3") || a == b {
		t.Errorf("PortMAC: vm3 %s (again %s), vm4 %s", a, PortMAC("vm3"), b)
	}
	hw, err := net.ParseMAC(a)
	if err != nil || hw[0]&0x02 == 0 || hw[0]&0x01 != 0 {
		t.Errorf("PortMAC(vm3) = %s: want a locally administered unicast address", a)
	}
	for in, want := range map[string]string{"vm3": "vhostd-vm3", "a b/c": "vhostd-a_b_c", "x.y_z-1": "vhostd-x.y_z-1"} {
		if got := NICID(in); got != want {
			t.Errorf("NICID(%q) = %q, want %q", in, got, want)
		}
	}
}
