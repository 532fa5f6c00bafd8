package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// fullConfig sets every setting, so that a round trip that drops one
// fails.
func fullConfig() Config {
	c := Default()
	c.Control = "/run/x/ctl.sock"
	c.LogLevel = "debug"
	c.Pollers = 2
	c.FDBSize = 4096
	c.FDBAge = Duration{90 * time.Second}
	c.StateFile = "/var/lib/vhostd/state.toml"
	c.Uplink = "up=net_tap0,iface=vhostd0"
	c.EAL = "--no-huge -m 256"
	c.UplinkMTU = 9000
	c.MaxMACsDefault = 64
	c.SocketOwner = "0"
	c.SocketGroup = "0"
	c.SocketMode = "0660"
	c.Ports = []Port{
		{Name: "vm1", Socket: "/run/x/vm1.sock", DisableFeatures: []string{"mrg_rxbuf", "event_idx"}, QueuePairs: 2,
			MAC: "02:00:00:00:00:0a", MaxMACs: 4, Owner: "0", Group: "0", Mode: "0600"},
		{Name: "vm2", Socket: "/run/x/vm2.sock", MAC: LearnMAC},
		{Name: "vm3", Socket: "/run/x/vm3.sock"},
	}
	return c
}

// TestMarshalRoundTrip: what dump-config and the state file write, Load
// reads back to the same configuration, which is still valid.
func TestMarshalRoundTrip(t *testing.T) {
	for name, c := range map[string]Config{"full": fullConfig(), "default": func() Config {
		c := Default()
		c.Ports = []Port{{Name: "a", Socket: "/tmp/a.sock"}}
		return c
	}()} {
		b, err := Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "dump.toml")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := Load(path)
		if err != nil {
			t.Fatalf("%s: load what Marshal wrote: %v\n%s", name, err, b)
		}
		if !reflect.DeepEqual(got, c) {
			t.Errorf("%s: round trip changed the config:\nwrote %+v\nread  %+v\n%s", name, c, got, b)
		}
		if err := got.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if name == "full" && (!strings.Contains(string(b), `fdb_age = "1m30s"`) || !strings.Contains(string(b), `mode = "0600"`)) {
			t.Errorf("durations and modes are written as strings:\n%s", b)
		}
	}
}

// TestWriteState: the state file is replaced whole, no temporary file
// stays behind, and a directory that cannot be written is an error that
// names the file.
func TestWriteState(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "state.toml")
	c := fullConfig()
	if err := WriteState(path, c); err != nil {
		t.Fatal(err)
	}
	c.Ports = c.Ports[:1]
	if err := WriteState(path, c); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Errorf("state file holds %+v, want %+v", got, c)
	}
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Errorf("state directory holds %d files, want only state.toml: %v", len(ents), ents)
	}
	if os.Geteuid() != 0 {
		ro := filepath.Join(dir, "ro")
		os.Mkdir(ro, 0o555)
		if err := WriteState(filepath.Join(ro, "s.toml"), c); err == nil || !strings.Contains(err.Error(), "s.toml") {
			t.Errorf("unwritable directory: %v", err)
		}
	}
	if err := WriteState(filepath.Join(path, "under-a-file.toml"), c); err == nil || !strings.Contains(err.Error(), "under-a-file.toml") {
		t.Errorf("state file under a regular file: %v", err)
	}
}

// TestValidateStateFile: without ports is valid only with a state file.
func TestValidateStateFile(t *testing.T) {
	c := Default()
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "no ports") {
		t.Fatalf("no ports, no state file: %v", err)
	}
	c.StateFile = "/tmp/state.toml"
	if err := c.Validate(); err != nil {
		t.Fatalf("no ports, with a state file: %v", err)
	}
	c.StateFile = c.Control
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "control socket's path") {
		t.Fatalf("state file on the control socket: %v", err)
	}
}
