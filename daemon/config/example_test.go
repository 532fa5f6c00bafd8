package config

import (
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"testing"
)

// The example config `make install` ships (daemon/systemd/vhostd.toml)
// loads and validates as the unit runs it (with a state file, so without
// ports), and so do its commented-out examples once uncommented.
func TestExampleConfig(t *testing.T) {
	const example = "../systemd/vhostd.toml"
	b, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	uncommented := regexp.MustCompile(`(?m)^# ((?:\[\[port\]\])|(?:[a-z_]+ = .*))$`).ReplaceAll(b, []byte("$1"))
	full := filepath.Join(t.TempDir(), "full.toml")
	if err := os.WriteFile(full, uncommented, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path  string
		ports int
	}{{example, 0}, {full, 2}} {
		c, err := Load(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		if c.Control != DefaultControl || c.SocketGroup != "kvm" || c.SocketMode != "0660" || len(c.Ports) != tc.ports {
			t.Errorf("%s: control %q, socket_group %q, socket_mode %q, %d ports", tc.path, c.Control, c.SocketGroup, c.SocketMode, len(c.Ports))
		}
		c.StateFile = "/var/lib/vhostd/state.toml" // as the unit's ExecStart says
		if _, err := user.LookupGroup(c.SocketGroup); err != nil {
			// The group is the host's business (udev and QEMU's
			// packages create kvm); the rest is checked.
			t.Logf("no group %s here (%v): validating with root", c.SocketGroup, err)
			c.SocketGroup = "root"
		}
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", tc.path, err)
		}
	}
}
