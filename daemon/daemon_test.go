package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/daemon/config"
	"github.com/vhostd/vhostd/vhost/vhosttest"
)

// TestStartAppliesPortSecurity: the mac, max_macs and socket permission
// settings reach the switch and the sockets.
func TestStartAppliesPortSecurity(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Control = filepath.Join(dir, "control.sock")
	cfg.SocketMode = "0660"
	if os.Geteuid() == 0 {
		cfg.SocketGroup = "65534"
	}
	cfg.MaxMACsDefault = 100
	cfg.Ports = []config.Port{
		{Name: "vm1", Socket: filepath.Join(dir, "vm1.sock"), MAC: "02:00:00:00:00:0a", Mode: "0600"},
		{Name: "vm2", Socket: filepath.Join(dir, "vm2.sock"), MAC: config.LearnMAC, MaxMACs: 7},
	}
	l := logrus.New()
	l.SetLevel(logrus.WarnLevel)
	d, err := Start(cfg, logrus.NewEntry(l))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()

	for i, want := range []uint32{0o600, 0o660} {
		var st unix.Stat_t
		if err := unix.Lstat(cfg.Ports[i].Socket, &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&0o777 != want || (cfg.SocketGroup != "" && st.Gid != 65534) {
			t.Errorf("%s: mode %#o gid %d, want %#o and the configured group", cfg.Ports[i].Name, st.Mode&0o777, st.Gid, want)
		}
	}
	ports := d.Ports()
	if len(ports) != 2 {
		t.Fatalf("ports %+v", ports)
	}
	if p := ports[0]; p.MAC != "02:00:00:00:00:0a" || p.LockedMAC != p.MAC || p.MaxMACs != 100 {
		t.Errorf("vm1: mac %q locked %q max %d", p.MAC, p.LockedMAC, p.MaxMACs)
	}
	if p := ports[1]; p.MAC != "learn" || p.LockedMAC != "" || p.MaxMACs != 7 {
		t.Errorf("vm2: mac %q locked %q max %d", p.MAC, p.LockedMAC, p.MaxMACs)
	}
	fdb := d.FDB()
	if len(fdb) != 1 || fdb[0].MAC != "02:00:00:00:00:0a" || fdb[0].Port != "vm1" || !fdb[0].Static {
		t.Errorf("fdb %+v: want vm1's address, static", fdb)
	}
	d.Stop()
	for _, p := range cfg.Ports {
		if _, err := os.Lstat(p.Socket); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", p.Socket, err)
		}
	}
}

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetLevel(logrus.WarnLevel)
	return logrus.NewEntry(l)
}

func portNames(d *Daemon) []string {
	var names []string
	for _, p := range d.Ports() {
		names = append(names, p.Name)
	}
	return names
}

// TestAddDelPort: add-port applies the config file's rules to the running
// configuration and serves the port at once; del-port drops its frontend,
// removes its socket and forgets its addresses; the state file follows
// every change and loads back as the running configuration.
func TestAddDelPort(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Control = filepath.Join(dir, "control.sock")
	cfg.StateFile = filepath.Join(dir, "state", "state.toml")
	cfg.Ports = []config.Port{{Name: "vm1", Socket: filepath.Join(dir, "vm1.sock"), MAC: "02:00:00:00:00:0a"}}
	d, err := Start(cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	if st, err := config.Load(cfg.StateFile); err != nil || !reflect.DeepEqual(st, cfg) {
		t.Fatalf("state file at start: %+v, %v; want %+v", st, err, cfg)
	}

	vm2 := config.Port{Name: "vm2", Socket: filepath.Join(dir, "sub", "vm2.sock"), MAC: "02:00:00:00:00:0b", MaxMACs: 3, Mode: "0600",
		DisableFeatures: []string{"mrg_rxbuf"}, QueuePairs: 2}
	for _, bad := range []struct {
		p    config.Port
		want string
	}{
		{config.Port{Name: "vm1", Socket: filepath.Join(dir, "x.sock")}, `port name "vm1" used twice`},
		{config.Port{Name: "x", Socket: cfg.Ports[0].Socket}, "used twice"},
		{config.Port{Name: "x", Socket: cfg.Control}, "used twice"},
		{config.Port{Name: "x", Socket: filepath.Join(dir, "x.sock"), DisableFeatures: []string{"tso"}}, `unknown feature "tso"`},
		{config.Port{Name: "x", Socket: filepath.Join(dir, "x.sock"), MAC: "02:00:00:00:00:0a"}, `is port "vm1"'s already`},
		{config.Port{Name: "x", Socket: filepath.Join(dir, "x.sock"), QueuePairs: 500}, "queue_pairs = 500"},
		{config.Port{Name: "x", Socket: filepath.Join(dir, "x.sock"), Mode: "0999"}, "not an octal mode"},
	} {
		err := d.AddPort(bad.p)
		if err == nil || !strings.Contains(err.Error(), bad.want) || !strings.Contains(err.Error(), fmt.Sprintf("%q", bad.p.Name)) {
			t.Errorf("add-port %+v: %v, want an error about %q", bad.p, err, bad.want)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "x.sock")); !os.IsNotExist(err) {
		t.Errorf("a refused add-port left its socket: %v", err)
	}
	if got := portNames(d); !slices.Equal(got, []string{"vm1"}) {
		t.Fatalf("after refused add-ports, ports %v", got)
	}

	if err := d.AddPort(vm2); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(vm2.Socket, &st); err != nil || st.Mode&0o777 != 0o600 {
		t.Fatalf("vm2's socket: mode %#o, %v", st.Mode&0o777, err)
	}
	ports := d.Ports()
	if len(ports) != 2 || ports[1].Name != "vm2" || ports[1].MAC != vm2.MAC || ports[1].MaxMACs != 3 || slices.Contains(ports[1].Vhost.Offered, "mrg_rxbuf") {
		t.Fatalf("after add-port: %+v", ports)
	}
	want := cfg
	want.Ports = append(slices.Clone(cfg.Ports), vm2)
	if got := d.Config(); !reflect.DeepEqual(got, want) {
		t.Errorf("running config %+v, want %+v", got, want)
	}
	if st, err := config.Load(cfg.StateFile); err != nil || !reflect.DeepEqual(st, want) {
		t.Errorf("state file after add-port: %+v, %v; want %+v", st, err, want)
	}

	// A frontend on vm1 gets dropped by del-port.
	f, err := vhosttest.Dial(cfg.Ports[0].Socket, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.MapMemory(1<<20, 0, 0x7f0000000000); err != nil {
		t.Fatal(err)
	}
	if err := f.SetMemTable(false); err != nil {
		t.Fatal(err)
	}
	// Answered after the memory table: vhostd has mapped the memory.
	if _, err := f.GetU64(vhosttest.GetFeatures); err != nil {
		t.Fatal(err)
	}
	if p := d.Ports()[0]; !p.Vhost.Connected {
		t.Fatalf("vm1 with a frontend: %+v", p.Vhost)
	}
	if err := d.DelPort("nosuch"); err == nil || !strings.Contains(err.Error(), `no VM port named "nosuch"`) {
		t.Errorf("del-port nosuch: %v", err)
	}
	if err := d.DelPort("vm1"); err != nil {
		t.Fatal(err)
	}
	if !f.Closed() {
		t.Error("vm1's frontend still connected after del-port")
	}
	if _, err := os.Lstat(cfg.Ports[0].Socket); !os.IsNotExist(err) {
		t.Errorf("vm1's socket left after del-port: %v", err)
	}
	for _, e := range d.FDB() {
		if e.Port == "vm1" {
			t.Errorf("vm1's address %s still in the FDB", e.MAC)
		}
	}
	if got := portNames(d); !slices.Equal(got, []string{"vm2"}) {
		t.Errorf("after del-port, ports %v", got)
	}
	want.Ports = []config.Port{vm2}
	if st, err := config.Load(cfg.StateFile); err != nil || !reflect.DeepEqual(st, want) {
		t.Errorf("state file after del-port: %+v, %v; want %+v", st, err, want)
	}
	// vm1's name, socket and address are free again.
	if err := d.AddPort(cfg.Ports[0]); err != nil {
		t.Fatalf("add-port vm1 again: %v", err)
	}
	if fdb := d.FDB(); len(fdb) != 2 {
		t.Errorf("fdb %+v: want the pinned addresses of vm1 and vm2", fdb)
	}
	// The last port can go: with a state file, no ports is a valid
	// configuration, and the file says so.
	for _, n := range []string{"vm1", "vm2"} {
		if err := d.DelPort(n); err != nil {
			t.Fatal(err)
		}
	}
	if st, err := config.Load(cfg.StateFile); err != nil || len(st.Ports) != 0 || st.Validate() != nil {
		t.Errorf("state file without ports: %+v, %v", st, err)
	}
	d.Stop()
	if err := d.AddPort(vm2); err == nil {
		t.Error("add-port after Stop accepted")
	}
}

// TestStartRefusesLikeAddPort: a port Start refuses is refused with the same
// words as by add-port, and what Start created is gone.
func TestStartRefusesLikeAddPort(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Control = filepath.Join(dir, "control.sock")
	notSock := filepath.Join(dir, "file")
	os.WriteFile(notSock, nil, 0o644)
	cfg.Ports = []config.Port{{Name: "a", Socket: filepath.Join(dir, "a.sock")}, {Name: "b", Socket: notSock}}
	if _, err := Start(cfg, quietLog()); err == nil || !strings.Contains(err.Error(), "port b: ") || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Start: %v", err)
	}
	if _, err := os.Lstat(cfg.Ports[0].Socket); !os.IsNotExist(err) {
		t.Errorf("failed Start left a.sock: %v", err)
	}
}

// TestPortChangesWhileRead: ports come and go while the control socket's
// reads run (under -race: no data race), and each read sees a port whole:
// a VM port that is listed has its socket's status.
func TestPortChangesWhileRead(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Control = filepath.Join(dir, "control.sock")
	cfg.Ports = []config.Port{{Name: "base", Socket: filepath.Join(dir, "base.sock")}}
	d, err := Start(cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	stop := make(chan struct{})
	errs := make(chan string, 1)
	go func() {
		defer close(errs)
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, p := range d.Ports() {
				if p.Vhost.Path == "" {
					select {
					case errs <- fmt.Sprintf("port %s listed without its socket's status", p.Name):
					default:
					}
				}
			}
			d.Stats()
			d.FDB()
			d.Config()
		}
	}()
	for i := 0; i < 20; i++ {
		name := fmt.Sprintf("p%d", i)
		if err := d.AddPort(config.Port{Name: name, Socket: filepath.Join(dir, name+".sock"), MAC: fmt.Sprintf("02:00:00:00:01:%02x", i)}); err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			if err := d.DelPort(fmt.Sprintf("p%d", i-1)); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	if e, ok := <-errs; ok {
		t.Error(e)
	}
	if n := len(d.Config().Ports); n != 11 {
		t.Errorf("%d ports configured, want base and 10", n)
	}
	if n := len(d.FDB()); n != 10 {
		t.Errorf("%d pinned addresses, want the 10 ports' left", n)
	}
}
