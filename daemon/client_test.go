package daemon

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vhostd/vhostd/daemon/config"
	"github.com/vhostd/vhostd/vhost"
)

// TestStartClientPort: a client port creates no socket, shows as
// connecting until the frontend's socket answers, then connected; the
// default socket mode applies to the server port only; Stop leaves the
// frontend's socket alone.
func TestStartClientPort(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Control = filepath.Join(dir, "control.sock")
	cfg.SocketMode = "0600"
	fe := filepath.Join(dir, "fe.sock")
	cfg.Ports = []config.Port{
		{Name: "vm1", Socket: fe, Client: true},
		{Name: "vm2", Socket: filepath.Join(dir, "vm2.sock")},
	}
	l := logrus.New()
	l.SetLevel(logrus.ErrorLevel)
	d, err := Start(cfg, logrus.NewEntry(l))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	if _, err := os.Lstat(fe); !os.IsNotExist(err) {
		t.Fatalf("a client port created its socket: %v", err)
	}
	if fi, err := os.Lstat(cfg.Ports[1].Socket); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("server port's socket: %v %v", fi, err)
	}
	byName := func() map[string]string {
		m := map[string]string{}
		for _, p := range d.Ports() {
			m[p.Name] = p.State + "/" + p.Vhost.Mode
		}
		return m
	}
	if got := byName(); got["vm1"] != "connecting/"+vhost.ModeClient || got["vm2"] != "listening/"+vhost.ModeServer {
		t.Errorf("states before the frontend: %v", got)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: fe, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ln.SetDeadline(time.Now().Add(3 * time.Second))
	c, err := ln.AcceptUnix()
	if err != nil {
		t.Fatalf("vhostd did not connect: %v", err)
	}
	defer c.Close()
	deadline := time.Now().Add(3 * time.Second)
	for byName()["vm1"] != "connected/"+vhost.ModeClient {
		if time.Now().After(deadline) {
			t.Fatalf("states after connecting: %v", byName())
		}
		time.Sleep(5 * time.Millisecond)
	}
	d.Stop()
	if _, err := os.Lstat(fe); err != nil {
		t.Errorf("Stop removed the frontend's socket: %v", err)
	}
}
