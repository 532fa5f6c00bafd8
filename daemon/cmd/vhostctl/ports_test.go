package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/vhostd/vhostd/daemon"
	"github.com/vhostd/vhostd/daemon/config"
)

// startDaemon starts a real vhostd (in process) with one port, a.
func startDaemon(t *testing.T) (*daemon.Daemon, config.Config) {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Control = filepath.Join(dir, "ctl.sock")
	cfg.StateFile = filepath.Join(dir, "state.toml")
	cfg.Ports = []config.Port{{Name: "a", Socket: filepath.Join(dir, "a.sock")}}
	l := logrus.New()
	l.SetLevel(logrus.WarnLevel)
	d, err := daemon.Start(cfg, logrus.NewEntry(l))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	return d, cfg
}

// TestPortCommands: every add-port flag reaches the daemon's port, del-port
// deletes it, and dump-config prints a config file that loads back to the
// running configuration.
func TestPortCommands(t *testing.T) {
	d, cfg := startDaemon(t)
	dir := filepath.Dir(cfg.Control)
	owner := []string{}
	if os.Geteuid() == 0 {
		owner = []string{"--owner", "0", "--group", "0"}
	}
	args := append([]string{"--control", cfg.Control, "add-port", "vm1", "--socket", filepath.Join(dir, "vm1.sock"), "--disable", "mrg_rxbuf+event_idx",
		"--queues", "2", "--mac", "02:00:00:00:00:0a", "--max-macs", "5", "--mtu", "9000", "--mode", "0600"}, owner...)
	out, err := vhostctl(t, args...)
	if err != nil {
		t.Fatalf("add-port: %v\n%s", err, out)
	}
	if want := "port vm1 added; state saved to " + cfg.StateFile + "\n"; out != want {
		t.Errorf("add-port printed %q, want %q", out, want)
	}
	want := config.Port{Name: "vm1", Socket: filepath.Join(dir, "vm1.sock"), DisableFeatures: []string{"mrg_rxbuf", "event_idx"}, QueuePairs: 2,
		MAC: "02:00:00:00:00:0a", MaxMACs: 5, MTU: 9000, Mode: "0600"}
	if len(owner) > 0 {
		want.Owner, want.Group = "0", "0"
	}
	if got := d.Config().Ports; len(got) != 2 || !reflect.DeepEqual(got[1], want) {
		t.Fatalf("daemon's ports %+v, want a and %+v", got, want)
	}
	// The name may come after the flags too.
	if out, err := vhostctl(t, "add-port", "--control", cfg.Control, "--socket", filepath.Join(dir, "vm2.sock"), "--json", "vm2"); err != nil || !strings.Contains(out, `"port":"vm2"`) {
		t.Fatalf("add-port --json: %v\n%s", err, out)
	}

	// dump-config prints the running configuration as a config file.
	out, err = vhostctl(t, "--control", cfg.Control, "dump-config")
	if err != nil {
		t.Fatalf("dump-config: %v\n%s", err, out)
	}
	path := filepath.Join(dir, "dump.toml")
	os.WriteFile(path, []byte(out), 0o644)
	loaded, err := config.Load(path)
	if err != nil {
		t.Fatalf("load dump-config's output: %v\n%s", err, out)
	}
	if running := d.Config(); !reflect.DeepEqual(loaded, running) || len(loaded.Ports) != 3 {
		t.Errorf("dump-config loads as %+v, running %+v\n%s", loaded, running, out)
	}
	out, err = vhostctl(t, "--control", cfg.Control, "--json", "dump-config")
	var c config.Config
	if err != nil || json.Unmarshal([]byte(out), &c) != nil || !reflect.DeepEqual(c, loaded) {
		t.Errorf("dump-config --json: %v\n%s", err, out)
	}

	if out, err := vhostctl(t, "--control", cfg.Control, "del-port", "vm1"); err != nil || out != "port vm1 deleted; state saved to "+cfg.StateFile+"\n" {
		t.Fatalf("del-port: %v\n%s", err, out)
	}
	if got := d.Config().Ports; len(got) != 2 || got[1].Name != "vm2" {
		t.Errorf("after del-port: %+v", got)
	}
}

// TestPortCommandErrors: mistakes are refused with what to fix, by
// vhostctl or by the daemon's rules for the config file.
func TestPortCommandErrors(t *testing.T) {
	_, cfg := startDaemon(t)
	dir := filepath.Dir(cfg.Control)
	c := []string{"--control", cfg.Control}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"add-port", "--socket", "/x.sock"}, "give the port's name"},
		{[]string{"add-port", "x"}, "--socket PATH is required"},
		{[]string{"add-port", "x", "y", "--socket", "/x.sock"}, "unexpected arguments"},
		{[]string{"add-port", "x", "--socket", "/x.sock", "--queues", "two"}, "invalid value"},
		{[]string{"add-port", "a", "--socket", filepath.Join(dir, "x.sock")}, `port name "a" used twice`},
		{[]string{"add-port", "x", "--socket", filepath.Join(dir, "a.sock")}, "used twice"},
		{[]string{"add-port", "x", "--socket", filepath.Join(dir, "x.sock"), "--disable", "tso"}, `unknown feature "tso"`},
		{[]string{"add-port", "x", "--socket", filepath.Join(dir, "x.sock"), "--mac", "ff:ff:ff:ff:ff:ff"}, "multicast"},
		{[]string{"add-port", "x", "--socket", filepath.Join(dir, "x.sock"), "--mode", "0999"}, "not an octal mode"},
		{[]string{"add-port", "x", "--socket", filepath.Join(dir, "x.sock"), "--mtu", "40"}, "mtu 40 is out of range: use 68 to 65535"},
		{[]string{"del-port"}, "give the port's name"},
		{[]string{"del-port", "nosuch"}, `no VM port named "nosuch"`},
		{[]string{"dump-config", "extra"}, "unexpected arguments"},
	} {
		out, err := vhostctl(t, append(c, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("vhostctl %v: %v (%s), want an error with %q", tc.args, err, out, tc.want)
		}
	}
}

// TestAddPortClient: --client reaches the daemon as the port's "client"
// setting: taken if config.Port has it (client mode), else refused by
// name.
func TestAddPortClient(t *testing.T) {
	d, cfg := startDaemon(t)
	_, hasClient := reflect.TypeOf(config.Port{}).FieldByName("Client")
	_, err := vhostctl(t, "--control", cfg.Control, "add-port", "c", "--socket", filepath.Join(filepath.Dir(cfg.Control), "c.sock"), "--client")
	switch {
	case hasClient && err != nil:
		t.Fatalf("add-port --client: %v", err)
	case hasClient:
		ports := d.Config().Ports
		if !reflect.ValueOf(ports[len(ports)-1]).FieldByName("Client").Bool() {
			t.Errorf("--client did not reach the port: %+v", ports)
		}
	case err == nil || !strings.Contains(err.Error(), `unknown field "client"`):
		t.Errorf("add-port --client without client mode: %v", err)
	case len(d.Config().Ports) != 1:
		t.Errorf("a refused add-port changed the ports: %+v", d.Config().Ports)
	}
}
