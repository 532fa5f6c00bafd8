package daemon

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/daemon/config"
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
