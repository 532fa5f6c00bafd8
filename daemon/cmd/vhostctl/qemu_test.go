package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/vhostd/vhostd/daemon/config"
	"github.com/vhostd/vhostd/daemon/control"
	"github.com/vhostd/vhostd/qemu"
	"github.com/vhostd/vhostd/qemu/qmptest"
	vswitch "github.com/vhostd/vhostd/switch"
	"github.com/vhostd/vhostd/vhost"
)

// fakeDaemon answers the control socket with one port, vm3, whose frontend
// is connected while the fake QEMU has its netdev, as with vhostd and QEMU.
type fakeDaemon struct {
	sock string
	mtu  int // vm3's MTU
	m    *qmptest.Machine
}

func (d *fakeDaemon) Ports() []control.PortInfo {
	p := control.PortInfo{Name: "vm3", Kind: "vhost-user", State: "listening", Vhost: vhost.Status{Path: d.sock, MTU: d.mtu}}
	if len(d.m.Netdevs()) > 0 {
		p.State, p.Vhost.Connected = "connected", true
	}
	return []control.PortInfo{p, {Name: "up0", Kind: "uplink", State: "running"}}
}
func (d *fakeDaemon) Stats() []control.PortStats     { return nil }
func (d *fakeDaemon) FDB() []vswitch.LearnedMAC      { return nil }
func (d *fakeDaemon) Pollers() []control.PollerStats { return nil }
func (d *fakeDaemon) Trace(string) ([]control.PortTrace, error) {
	return nil, errors.New("fake: no trace")
}
func (d *fakeDaemon) AddPort(config.Port) error { return errors.New("fake: no add-port") }
func (d *fakeDaemon) DelPort(string) error      { return errors.New("fake: no del-port") }
func (d *fakeDaemon) Config() config.Config     { return config.Config{} }

func startFakes(t *testing.T, mem qmptest.Memdev) (ctl string, s *qmptest.Server, m *qmptest.Machine) {
	t.Helper()
	return startFakesMTU(t, mem, 0)
}

// startFakesMTU is startFakes with port vm3 configured with an MTU.
func startFakesMTU(t *testing.T, mem qmptest.Memdev, mtu int) (ctl string, s *qmptest.Server, m *qmptest.Machine) {
	t.Helper()
	s = qmptest.NewServer(t)
	m = qmptest.NewMachine(mem)
	m.Install(s)
	dir, err := os.MkdirTemp("", "vhostctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ctl = filepath.Join(dir, "ctl.sock")
	log := logrus.New()
	log.SetOutput(io.Discard)
	srv, err := control.Listen(ctl, &fakeDaemon{sock: "/run/vhostd/vm3.sock", mtu: mtu, m: m}, logrus.NewEntry(log))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return ctl, s, m
}

func vhostctl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(args, &out)
	return out.String(), err
}

func TestAttachDetachCommands(t *testing.T) {
	ctl, s, m := startFakes(t, qmptest.SharedMemory)
	out, err := vhostctl(t, "--control", ctl, "attach", "--qmp", s.Path(), "--port", "vm3", "--mac", "52:54:00:00:00:03")
	if err != nil {
		t.Fatalf("attach: %v\n%s", err, out)
	}
	want := "attached port vm3 to QEMU as device vhostd-vm3, MAC 52:54:00:00:00:03\nvhostd: port vm3 connected\n"
	if out != want {
		t.Errorf("attach printed %q, want %q", out, want)
	}
	if d := m.Device("vhostd-vm3"); d == nil || d["mac"] != "52:54:00:00:00:03" || d["host_mtu"] != nil {
		t.Errorf("device_add arguments %v (no host_mtu for a port without an MTU)", d)
	}
	// A port with a frontend is refused before QMP is used.
	n := len(s.Requests())
	if out, err := vhostctl(t, "--control", ctl, "attach", "--qmp", s.Path(), "--port", "vm3"); err == nil || !strings.Contains(err.Error(), "already has a frontend") {
		t.Errorf("attach to a busy port: %v\n%s", err, out)
	}
	if len(s.Requests()) != n {
		t.Errorf("busy port: QMP was used: %v", s.Commands()[n:])
	}
	// --control after the command works too.
	out, err = vhostctl(t, "detach", "--qmp", s.Path(), "--port", "vm3", "--control", ctl)
	if err != nil || out != "detached device vhostd-vm3 from QEMU\nvhostd: port vm3 listening\n" {
		t.Fatalf("detach: %v\n%s", err, out)
	}
	if len(m.Devices())+len(m.Netdevs())+len(m.Chardevs()) != 0 {
		t.Errorf("left in QEMU: %v %v %v", m.Devices(), m.Netdevs(), m.Chardevs())
	}
	if _, err := vhostctl(t, "--control", ctl, "detach", "--qmp", s.Path(), "--port", "vm3"); err == nil || !strings.Contains(err.Error(), "no such NIC") {
		t.Errorf("second detach: %v", err)
	}
}

// TestAttachMTU: a port with an MTU is attached with host_mtu, so that
// QEMU offers the MTU to the driver, as qemu-args does.
func TestAttachMTU(t *testing.T) {
	ctl, s, m := startFakesMTU(t, qmptest.SharedMemory, 1400)
	if out, err := vhostctl(t, "--control", ctl, "attach", "--qmp", s.Path(), "--port", "vm3"); err != nil {
		t.Fatalf("attach: %v\n%s", err, out)
	}
	if d := m.Device("vhostd-vm3"); d == nil || d["host_mtu"] != float64(1400) {
		t.Errorf("device_add arguments %v, want host_mtu 1400", d)
	}
}

func TestAttachCommandErrors(t *testing.T) {
	ctl, s, m := startFakes(t, qmptest.PrivateMemory)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"attach", "--qmp", s.Path(), "--port", "vm3"}, "guest memory is not shared"},
		{[]string{"attach", "--qmp", s.Path(), "--port", "vm9"}, `no port "vm9" (ports: up0, vm3)`},
		{[]string{"attach", "--qmp", s.Path(), "--port", "up0"}, "up0 is of kind uplink, not a vhost-user socket"},
		{[]string{"attach", "--port", "vm3"}, "--qmp and --port are required"},
		{[]string{"attach", "--qmp", s.Path(), "--port", "vm3", "--mac", "nope"}, "not a 6-byte MAC"},
		{[]string{"attach", "--qmp", s.Path(), "--port", "vm3", "stray"}, "unexpected arguments"},
		{[]string{"detach", "--qmp", s.Path()}, "--qmp and --port are required"},
		{[]string{"qemu-args"}, "--port is required"},
		{[]string{"qemu-args", "--port", "vm3", "--mem", "0"}, "must be positive"},
	}
	for _, c := range cases {
		_, err := vhostctl(t, append([]string{"--control", ctl}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("vhostctl %v: %v, want an error containing %q", c.args, err, c.want)
		}
	}
	if len(m.Chardevs()) != 0 {
		t.Errorf("a failed attach left chardevs %v", m.Chardevs())
	}
}

func TestQEMUArgsCommand(t *testing.T) {
	ctl, _, _ := startFakes(t, qmptest.SharedMemory)
	out, err := vhostctl(t, "--control", ctl, "qemu-args", "--port", "vm3", "--mem", "512")
	if err != nil {
		t.Fatal(err)
	}
	want := `-m 512M \
-object memory-backend-memfd,id=mem,size=512M,share=on \
-numa node,memdev=mem \
-chardev socket,id=c0,path=/run/vhostd/vm3.sock,reconnect=1 \
-netdev vhost-user,id=n0,chardev=c0 \
-device virtio-net-pci,netdev=n0,mac=` + qemu.PortMAC("vm3") + `,vectors=0
`
	if out != want {
		t.Errorf("qemu-args:\n%s\nwant:\n%s", out, want)
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"socket,id=c0,path=/run/a.sock": "socket,id=c0,path=/run/a.sock",
		"path=/run/my vms/a.sock":       "'path=/run/my vms/a.sock'",
		"it's":                          `'it'\''s'`,
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}
